"""Fakes that are real implementations, shared by unit tests that build the backend in-process."""

from collections.abc import Collection

from workfleet.backend.gateway import DispatchResult, HealthCheckFailed
from workfleet.domain.operations import Lease
from workfleet.domain.workers import Worker
from workfleet.protocol import DispatchRequest, WorkerHealth


class NoFleet:
    """A WorkerGateway that reaches no worker (no sockets in unit tests): registered workers
    refuse work and do not answer their health checks, so no endpoint URL is ever called."""

    async def dispatch(self, worker: Worker, request: DispatchRequest) -> DispatchResult:
        return DispatchResult("refused", "no fleet in this test")

    async def dispatch_many(
        self, worker: Worker, requests: list[DispatchRequest]
    ) -> list[DispatchResult]:
        return [await self.dispatch(worker, request) for request in requests]

    async def cancel(self, worker: Worker, operation_id: str, lease: Lease) -> None:
        return None

    async def health(self, worker: Worker, *, timeout_s: float) -> WorkerHealth:
        raise HealthCheckFailed("no fleet in this test", refused=True)

    def keep_only(self, worker_ids: Collection[str]) -> None:
        return None

    async def close(self) -> None:
        return None
