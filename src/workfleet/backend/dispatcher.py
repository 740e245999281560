"""The dispatch loop: place pending operations, POST them to their workers, record the answer.

One task places (so two placements never race for the same slot); each POST runs in its own
task, so a slow worker does not hold up dispatch to the others.

Tracing on: each attempt gets a `dispatch` span in its operation's trace (from the traceparent
stored at submit), ended when the worker's answer is recorded; the POST of a single dispatch
runs in it (its traceparent header continues the trace on the worker), a batch POST in a trace
of its own linked to each; every request also carries its operation's traceparent in its body.
"""

import asyncio
from typing import Any

import structlog

from workfleet.backend.gateway import DispatchResult, WorkerGateway
from workfleet.backend.orchestrator import Orchestrator
from workfleet.domain.operations import Operation
from workfleet.domain.workers import Worker
from workfleet.observability import tracing
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
        spans = [_dispatch_span(op, worker) for op, _ in group]
        requests = [
            _request(op, tracing.traceparent_of(span))
            for (op, _), span in zip(group, spans, strict=True)
        ]
        try:
            if len(requests) == 1:
                with tracing.activate(spans[0]):
                    results = [await self._gateway.dispatch(worker, requests[0])]
            else:
                with tracing.linked("dispatch_batch", spans):
                    results = await self._gateway.dispatch_many(worker, requests)
        except Exception as exc:  # never leave an attempt pending with its slot held
            log.exception("dispatch_crashed", worker_id=worker.worker_id)
            results = [DispatchResult("unconfirmed", f"{type(exc).__name__}: {exc}")] * len(group)
        for (op, _), result, span in zip(group, results, spans, strict=True):
            with tracing.activate(span):  # its log lines (and a lost attempt's) in its trace
                self._record(op, worker, result)
            failed = None if result.kind == "accepted" else f"{result.kind}: {result.detail}"
            tracing.end(span, error=failed, result=result.kind)
        if any(result.kind == "unreachable" for result in results):
            self._orchestrator.declare_unreachable(worker.worker_id)

    def _record(self, op: Operation, worker: Worker, result: DispatchResult) -> None:
        assert op.lease is not None
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


def _dispatch_span(op: Operation, worker: Worker) -> tracing.Span | None:
    return tracing.start(
        "dispatch",
        parent=op.traceparent,
        attributes={
            "operation_id": op.operation_id,
            "worker_id": worker.worker_id,
            "attempt": op.attempt,
        },
    )


def _request(op: Operation, traceparent: str | None) -> DispatchRequest:
    assert op.lease is not None
    return DispatchRequest(
        operation_id=op.operation_id,
        operation_type=op.operation_type,
        params=dict(op.params),
        lease=LeaseModel(attempt=op.lease.attempt, token=op.lease.token),
        traceparent=traceparent,
    )
