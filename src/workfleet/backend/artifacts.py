"""Artifacts: uploaded by the worker running an operation, only under its current lease (a
zombie attempt gets 409 and cannot overwrite the outputs of the attempt that stands), stored
content-addressed, listed and downloaded by clients."""

import hashlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import anyio.to_thread

from workfleet.domain.artifacts import Artifact, check_name
from workfleet.domain.errors import NotFound
from workfleet.domain.operations import Lease
from workfleet.files import write_atomically
from workfleet.store.base import Store


class ArtifactService:
    def __init__(
        self,
        store: Store,
        directory: Path,
        clock: Callable[[], datetime],
        check_lease: Callable[[str, Lease], None],
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._check_lease = check_lease

    async def put(self, operation_id: str, lease: Lease, name: str, data: bytes) -> Artifact:
        check_name(name)
        self._check_lease(operation_id, lease)
        sha256 = await anyio.to_thread.run_sync(self._store_bytes, data)
        self._check_lease(operation_id, lease)  # still current after the (slow) write
        artifact = Artifact(operation_id, name, lease.attempt, sha256, len(data), self._clock())
        await self._store.save_artifact(artifact)
        return artifact

    async def list(self, operation_id: str) -> list[Artifact]:
        return await self._store.list_artifacts(operation_id)

    async def get(self, operation_id: str, name: str) -> Artifact:
        for artifact in await self._store.list_artifacts(operation_id):
            if artifact.name == name:
                return artifact
        raise NotFound(f"operation {operation_id} has no artifact {name!r}")

    def _store_bytes(self, data: bytes) -> str:
        """Hash and write off the event loop (artifacts can be large)."""
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.path_of(sha256)
        if not target.exists():  # content-addressed: the same bytes are already there
            write_atomically(target, data)
        return sha256

    def path_of(self, sha256: str) -> Path:
        return self._directory / sha256
