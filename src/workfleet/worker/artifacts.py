"""Uploading what an operation wrote (ctx.write_artifact) under its attempt's lease, retried
while the backend is unreachable; a 409 means the attempt no longer stands, and the file is
dropped."""

import asyncio
from pathlib import Path

import httpx
import structlog

from workfleet.domain.operations import Lease

log = structlog.get_logger(__name__)
MAX_BACKOFF_S = 2.0


class ArtifactUploader:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def upload(self, operation_id: str, lease: Lease, name: str, path: Path) -> None:
        headers = {
            "X-Lease-Attempt": str(lease.attempt),
            "X-Lease-Token": lease.token,
            "Content-Type": "application/octet-stream",
        }
        url = f"/api/v1/operations/{operation_id}/artifacts/{name}"
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


def _take(path: Path) -> bytes:
    """The file's bytes, and the file gone: from here on the upload owns them."""
    data = path.read_bytes()
    path.unlink()
    return data
