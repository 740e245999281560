"""Artifacts between a worker and the backend.

Upload: what an operation wrote (ctx.write_artifact, ctx.save_checkpoint), under its attempt's
lease, retried while the backend is unreachable; a 409 means the attempt no longer stands, and
the file is dropped.
Fetch: an artifact an operation asked for (a checkpoint to resume from, a trained model),
checked against the SHA-256 the backend recorded for it, and refused if it does not match.
"""

import asyncio
import hashlib
import tempfile
from pathlib import Path
from urllib.parse import quote

import httpx
import structlog

from workfleet.domain.operations import Lease

log = structlog.get_logger(__name__)
MAX_BACKOFF_S = 2.0


class ArtifactUnavailable(Exception):
    """The artifact cannot be had (unreachable backend, failed hash check)."""


class ArtifactTransfers:
    def __init__(self, client: httpx.AsyncClient, directory: Path) -> None:
        self._client = client
        self._directory = directory

    async def upload(self, operation_id: str, lease: Lease, name: str, path: Path) -> None:
        headers = {
            "X-Lease-Attempt": str(lease.attempt),
            "X-Lease-Token": lease.token,
            "Content-Type": "application/octet-stream",
        }
        url = _url(operation_id, name)
        data = await asyncio.to_thread(_take, path)
        backoff = 0.05
        while True:
            try:
                response = await self._client.put(url, content=data, headers=headers, timeout=300)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code < 500:
                if not response.is_success:
                    log.warning(
                        "artifact_refused",
                        operation_id=operation_id,
                        name=name,
                        status=response.status_code,
                        detail=response.text[:200],
                    )
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def fetch(self, operation_id: str, name: str) -> Path | None:
        """A private file holding the artifact's checked bytes, or None if there is none."""
        try:
            response = await self._client.get(_url(operation_id, name), timeout=300)
        except httpx.HTTPError as exc:
            raise ArtifactUnavailable(f"cannot fetch {name} of {operation_id}: {exc}") from exc
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise ArtifactUnavailable(
                f"fetching {name} of {operation_id}: HTTP {response.status_code}"
            )
        expected = response.headers.get("X-Content-SHA256", "")
        return await asyncio.to_thread(self._keep, response.content, expected, operation_id, name)

    def _keep(self, data: bytes, expected: str, operation_id: str, name: str) -> Path:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise ArtifactUnavailable(
                f"artifact {name} of {operation_id} failed its hash check (the backend recorded "
                f"{expected[:12] or 'no hash'}…, the bytes hash to {digest[:12]}…): refused"
            )
        self._directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self._directory, delete=False) as handle:
            handle.write(data)
        return Path(handle.name)


def _url(operation_id: str, name: str) -> str:
    return f"/api/v1/operations/{quote(operation_id, safe='')}/artifacts/{quote(name, safe='')}"


def _take(path: Path) -> bytes:
    """The file's bytes, and the file gone: from here on the upload owns them."""
    data = path.read_bytes()
    path.unlink()
    return data
