"""The dispatch loop: place pending operations, POST them to their workers, record the answer.

One task places (so two placements never race for the same slot); each POST runs in its own
task, so a slow worker does not hold up dispatch to the others.
"""

import asyncio
from typing import Any

import structlog

from workfleet.backend.gateway import DispatchResult, WorkerGateway
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
            by_worker: dict[str, list[tuple[Operation, Worker]]] = {}
            while (assignment := self._orchestrator.next_assignment()) is not None:
                by_worker.setdefault(assignment[1].worker_id, []).append(assignment)
            for group in by_worker.values():
                task = asyncio.create_task(self._send(group))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)

    async def _send(self, group: list[tuple[Operation, Worker]]) -> None:
        """One request per worker, however many of its slots were filled in this round."""
        worker = group[-1][1]
        requests = [_request(op) for op, _ in group]
        try:
            if len(requests) == 1:
                results = [await self._gateway.dispatch(worker, requests[0])]
            else:
                results = await self._gateway.dispatch_many(worker, requests)
        except Exception as exc:  # never leave an attempt pending with its slot held
            log.exception("dispatch_crashed", worker_id=worker.worker_id)
            results = [DispatchResult("unconfirmed", f"{type(exc).__name__}: {exc}")] * len(group)
        for (op, _), result in zip(group, results, strict=True):
            assert op.lease is not None
            if result.kind == "accepted":
                self._orchestrator.dispatch_accepted(op.operation_id, op.lease, result.accepted_seq)
                continue
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
        if any(result.kind == "unreachable" for result in results):
            self._orchestrator.declare_unreachable(worker.worker_id)


def _request(op: Operation) -> DispatchRequest:
    assert op.lease is not None
    return DispatchRequest(
        operation_id=op.operation_id,
        operation_type=op.operation_type,
        params=dict(op.params),
        lease=LeaseModel(attempt=op.lease.attempt, token=op.lease.token),
    )
