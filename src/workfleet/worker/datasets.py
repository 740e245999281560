"""Datasets on a worker: downloaded from the backend on first use, checked against their
SHA-256, then kept in a local cache named by that hash (a new version is a new file)."""

import asyncio
import hashlib
from pathlib import Path
from urllib.parse import quote

import httpx

from workfleet.files import write_atomically
from workfleet.protocol import DatasetView


class DatasetUnavailable(Exception):
    """The dataset cannot be had (unknown, unreachable backend, failed hash check)."""


class DatasetCache:
    def __init__(self, client: httpx.AsyncClient, directory: Path) -> None:
        self._client = client
        self._directory = directory
        self._locks: dict[str, asyncio.Lock] = {}

    async def path(self, symbol: str, timeframe: str) -> Path:
        base = f"/api/v1/datasets/{quote(symbol, safe='')}/{quote(timeframe, safe='')}"
        meta = await self._get(base)
        dataset = DatasetView.model_validate_json(meta.content)
        target = self._directory / f"{dataset.sha256}.csv"
        async with self._locks.setdefault(dataset.sha256, asyncio.Lock()):
            if not target.exists():
                content = (await self._get(f"{base}/content")).content
                digest = await asyncio.to_thread(lambda: hashlib.sha256(content).hexdigest())
                if digest != dataset.sha256:
                    raise DatasetUnavailable(
                        f"dataset {symbol} {timeframe} failed its hash check "
                        f"(expected {dataset.sha256[:12]}…, got {digest[:12]}…): refused"
                    )
                await asyncio.to_thread(write_atomically, target, content)
        return target

    async def _get(self, path: str) -> httpx.Response:
        try:
            response = await self._client.get(path, timeout=120.0)
        except httpx.HTTPError as exc:
            raise DatasetUnavailable(f"cannot fetch {path} from the backend: {exc}") from exc
        if response.status_code == 404:
            raise DatasetUnavailable(response.json().get("detail", f"no dataset at {path}"))
        if not response.is_success:
            raise DatasetUnavailable(f"fetching {path}: HTTP {response.status_code}")
        return response
