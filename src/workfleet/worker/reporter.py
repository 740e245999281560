"""Delivering what happens to operations back to the backend: progress (throttled per
operation) and final results (retried with backoff and buffered while the backend is
unreachable, so no result is lost while this process lives). One sender sends everything that
is due in one request, so a busy worker reports many results per round trip. A 409 for an
operation means our lease is stale: its work is abandoned.

Tracing on: a request carrying a result, or an attempt's first progress, is traced in that
operation's trace (in a `report` trace linked to each when it carries several); the periodic
progress in between is sent explicitly unsampled, so hours of progress do not flood a trace."""

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from workfleet.domain.operations import Lease
from workfleet.observability import tracing
from workfleet.protocol import (
    ErrorView,
    LeaseModel,
    Progress,
    ReportBatch,
    ReportItem,
    ReportResults,
)

log = structlog.get_logger(__name__)
MAX_BACKOFF_S = 2.0
MAX_BATCH = 500


@dataclass(slots=True)
class _Report:
    lease: Lease
    started_at: datetime | None = None
    progress: dict[str, Any] | None = None
    dirty: bool = False  # progress not yet sent
    final: ReportItem | None = None
    abandoned: bool = False
    last_sent: float = field(default_factory=time.monotonic)
    trace: tracing.Span | None = None  # the attempt's span on this worker (tracing on)
    traced: bool = False  # a progress report of it has been sent in its trace


class Reporter:
    def __init__(
        self,
        client: httpx.AsyncClient,
        worker_id: str,
        *,
        progress_interval_s: float,
        on_stale: Callable[[str, Lease], None],
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """`on_failure()`: a report request failed (unreachable, or refused)."""
        self._client = client
        self._on_failure = on_failure or (lambda: None)
        self._path = f"/api/v1/workers/{worker_id}/reports"
        self._interval = progress_interval_s
        self._on_stale = on_stale
        self._reports: dict[str, _Report] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_forever())

    def track(self, operation_id: str, lease: Lease, trace: tracing.Span | None = None) -> None:
        self._reports[operation_id] = _Report(lease=lease, trace=trace)
        self._idle.clear()

    def started(self, operation_id: str, started_at: float) -> None:
        report = self._reports.get(operation_id)
        if report is not None:
            report.started_at = datetime.fromtimestamp(started_at, UTC)
            report.dirty = True
            self._wake.set()

    def progress(self, operation_id: str, progress: dict[str, Any] | None) -> None:
        report = self._reports.get(operation_id)
        if report is not None and progress is not None:
            report.progress = {**progress, "updated_at": datetime.now(UTC).isoformat()}
            report.dirty = True
            self._wake.set()

    def finished(
        self, operation_id: str, outcome: str, result: Any, error: dict[str, Any] | None
    ) -> None:
        report = self._reports.get(operation_id)
        if report is None or report.abandoned:
            return
        report.final = ReportItem.model_validate(
            {
                "operation_id": operation_id,
                "lease": LeaseModel(attempt=report.lease.attempt, token=report.lease.token),
                "outcome": outcome,
                "result": result,
                "error": ErrorView(**error) if error else None,
                "started_at": report.started_at,
                "progress": Progress.model_validate(report.progress) if report.progress else None,
            }
        )
        self._wake.set()

    def abandon(self, operation_id: str) -> None:
        report = self._reports.pop(operation_id, None)
        if report is not None:
            report.abandoned = True
        self._check_idle()

    def undelivered(self) -> list[tuple[str, Lease, dict[str, Any] | None]]:
        """Finished here, not yet recorded there: the backend must keep counting them as ours."""
        return [(op_id, r.lease, r.progress) for op_id, r in self._reports.items() if r.final]

    def is_tracking(self, operation_id: str, lease: Lease) -> bool:
        report = self._reports.get(operation_id)
        return report is not None and report.lease == lease

    async def flush(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._idle.is_set()

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

    async def _send_forever(self) -> None:
        backoff = 0.05
        while True:
            try:
                delivered = await self._send_round()
            except Exception:  # the one sender must outlive any surprise, or results stop
                log.exception("report_round_failed")
                delivered = False
            if delivered:
                backoff = 0.05
            else:  # unreachable or refusing: keep everything, try again later
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _send_round(self) -> bool:
        batch, next_due = self._due(time.monotonic())
        if not batch:
            self._wake.clear()
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            return True
        results = await self._post(batch)
        if results is None:
            return False
        self._settle(batch, results)
        return True

    def _due(self, now: float) -> tuple[list[ReportItem], float | None]:
        """What to send now (finals first), and when the next throttled progress is due."""
        finals: list[ReportItem] = []
        progress: list[ReportItem] = []
        next_due: float | None = None
        for operation_id, report in self._reports.items():
            if report.final is not None:
                finals.append(report.final)
            elif report.dirty:
                due = report.last_sent + self._interval
                if due <= now:
                    progress.append(self._progress_item(operation_id, report))
                else:
                    next_due = due if next_due is None else min(next_due, due)
        return (finals + progress)[:MAX_BATCH], next_due

    def _progress_item(self, operation_id: str, report: _Report) -> ReportItem:
        report.dirty = False
        report.last_sent = time.monotonic()
        return ReportItem(
            operation_id=operation_id,
            lease=LeaseModel(attempt=report.lease.attempt, token=report.lease.token),
            progress=Progress.model_validate(report.progress) if report.progress else None,
            started_at=report.started_at,
        )

    async def _post(self, batch: list[ReportItem]) -> ReportResults | None:
        body = ReportBatch(reports=batch).model_dump_json()
        try:
            with self._trace(batch):
                response = await self._client.post(
                    self._path, content=body, headers={"Content-Type": "application/json"}
                )
        except httpx.HTTPError:
            self._on_failure()
            return None
        if response.status_code in (401, 403):
            log.error("reports_refused", status=response.status_code)
        if not response.is_success:
            self._on_failure()
            return None
        return ReportResults.model_validate_json(response.content)

    def _trace(self, batch: list[ReportItem]) -> AbstractContextManager[object]:
        if not tracing.enabled():
            return contextlib.nullcontext()
        spans: list[tracing.Span | None] = []
        for item in batch:
            report = self._reports.get(item.operation_id)
            if report is not None and (item.outcome is not None or not report.traced):
                report.traced = True
                spans.append(report.trace)
        if len(batch) > 1:
            return tracing.linked("report", spans) if any(spans) else tracing.unsampled()
        if spans:
            return tracing.activate(spans[0])
        report = self._reports.get(batch[0].operation_id)
        return tracing.unsampled(report.trace if report is not None else None)

    def _settle(self, batch: list[ReportItem], results: ReportResults) -> None:
        status_of = {r.operation_id: r.status for r in results.results}
        for item in batch:
            status = status_of.get(item.operation_id, 500)
            report = self._reports.get(item.operation_id)
            lease = Lease(item.lease.attempt, item.lease.token)
            if report is None or report.lease != lease:  # a newer attempt took its place
                continue
            if status in (404, 409):
                log.warning(
                    "report_rejected_as_stale",
                    operation_id=item.operation_id,
                    attempt=item.lease.attempt,
                    final=item.outcome is not None,
                )
                if item.outcome is None:  # still running here under a lease that is not ours
                    self._on_stale(item.operation_id, lease)
                self._reports.pop(item.operation_id, None)
            elif item.outcome is not None and status == 200:
                self._reports.pop(item.operation_id, None)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._reports:
            self._idle.set()
