"""Market datasets kept by the backend: validated, stored in canonical form under the SHA-256
of their bytes (so a worker can verify what it downloads), one current version per
(symbol, timeframe)."""

import hashlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import anyio.to_thread

from workfleet.domain.datasets import Dataset
from workfleet.domain.errors import InvalidRequest, NotFound
from workfleet.files import write_atomically
from workfleet.operations.timeframes import TIMEFRAMES
from workfleet.store.base import Store


class DatasetService:
    def __init__(self, store: Store, directory: Path, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock

    async def put(self, symbol: str, timeframe: str, data: bytes) -> Dataset:
        if timeframe not in TIMEFRAMES:
            raise InvalidRequest(f"unknown timeframe {timeframe!r}; one of {', '.join(TIMEFRAMES)}")
        # parsing a large file is CPU work: keep it off the event loop
        dataset = await anyio.to_thread.run_sync(self._write, symbol, timeframe, data)
        await self._store.save_dataset(dataset)
        return dataset

    async def get(self, symbol: str, timeframe: str) -> Dataset:
        dataset = await self._store.get_dataset(symbol, timeframe)
        if dataset is None:
            raise NotFound(f"no dataset {symbol} {timeframe}: import or generate it first")
        return dataset

    async def list(self) -> list[Dataset]:
        return await self._store.list_datasets()

    def path_of(self, dataset: Dataset) -> Path:
        return self._directory / f"{dataset.sha256}.csv"

    def _write(self, symbol: str, timeframe: str, data: bytes) -> Dataset:
        # pandas is imported on the first upload, not at start-up: most backends rarely need it
        from workfleet.operations.marketdata import DataError, parse_csv, to_csv

        try:
            frame = parse_csv(data)
        except DataError as exc:
            raise InvalidRequest(f"{symbol} {timeframe}: {exc}") from exc
        canonical = to_csv(frame)
        sha256 = hashlib.sha256(canonical).hexdigest()
        target = self._directory / f"{sha256}.csv"
        if not target.exists():  # content-addressed: the same bytes are already there
            write_atomically(target, canonical)
        return Dataset(
            symbol=symbol,
            timeframe=timeframe,
            sha256=sha256,
            bars=len(frame),
            first_at=frame.index[0].to_pydatetime(),
            last_at=frame.index[-1].to_pydatetime(),
            size_bytes=len(canonical),
            created_at=self._clock(),
        )
