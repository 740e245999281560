"""The dispatch loop: place pending operations, POST them to their workers, record the answer.

One task places (so two placements never race for the same slot); each POST runs in its own
task, so a slow worker does not hold up dispatch to the others.
"""

import asyncio
from typing import Any

import structlog

from workfleet.backend.gateway import WorkerGateway
from workfleet.backend.orchestrator import Orchestrator
from workfleet.domain.operations import Operation
from workfleet.domain.workers import Worker
from workfleet.protocol import DispatchRequest, LeaseModel

log = structlog.get_logger(__name__)


class Dispatcher:
    def __init__(self, orchestrator: Orchestrator, gateway: WorkerGateway) -> None:
        self._orchestrator = orchestrator
        self._gateway = gateway
        self._wake = asyncio.Event()
        self._sends: set[asyncio.Task[Any]] = set()
        orchestrator.on_work = self._wake.set

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (assignment := self._orchestrator.next_assignment()) is not None:
                task = asyncio.create_task(self._send(*assignment))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)

    async def _send(self, op: Operation, worker: Worker) -> None:
        assert op.lease is not None
        request = DispatchRequest(
            operation_id=op.operation_id,
            operation_type=op.operation_type,
            params=dict(op.params),
            lease=LeaseModel(attempt=op.lease.attempt, token=op.lease.token),
        )
        result = await self._gateway.dispatch(worker, request)
        if result.kind == "accepted":
            self._orchestrator.dispatch_accepted(op.operation_id, op.lease, result.accepted_seq)
            return
        log.warning(
            "dispatch_failed",
            operation_id=op.operation_id,
            worker_id=worker.worker_id,
            kind=result.kind,
            detail=result.detail,
        )
        certain = result.kind in ("refused", "unreachable")
        self._orchestrator.dispatch_failed(
            op.operation_id, op.lease, certain=certain, reason=result.kind
        )
        if result.kind == "unreachable":
            self._orchestrator.declare_unreachable(worker.worker_id)
