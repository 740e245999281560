"""Delivering what happens to operations back to the backend: progress (throttled) and the
final result (retried with backoff, buffered while the backend is unreachable, so no result
is lost while this process lives). A 409 means our lease is stale: the work is abandoned."""

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import structlog

from workfleet.domain.operations import Lease
from workfleet.protocol import CompletionReport, ErrorView, LeaseModel, Progress, ProgressReport

log = structlog.get_logger(__name__)
Delivery = Literal["delivered", "stale", "retry"]
MAX_BACKOFF_S = 2.0


@dataclass(slots=True)
class _Report:
    lease: Lease
    started_at: datetime | None = None
    progress: dict[str, Any] | None = None
    final: CompletionReport | None = None
    abandoned: bool = False
    last_sent: float = field(default_factory=time.monotonic)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Reporter:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        progress_interval_s: float,
        on_stale: Callable[[str], None],
    ) -> None:
        self._client = client
        self._interval = progress_interval_s
        self._on_stale = on_stale
        self._reports: dict[str, _Report] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def track(self, operation_id: str, lease: Lease) -> None:
        self._reports[operation_id] = _Report(lease=lease)
        self._idle.clear()
        task = asyncio.create_task(self._deliver(operation_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def started(self, operation_id: str, started_at: float) -> None:
        report = self._reports.get(operation_id)
        if report is not None:
            report.started_at = datetime.fromtimestamp(started_at, UTC)
            report.changed.set()

    def progress(self, operation_id: str, progress: dict[str, Any] | None) -> None:
        report = self._reports.get(operation_id)
        if report is not None and progress is not None:
            report.progress = {**progress, "updated_at": datetime.now(UTC).isoformat()}
            report.changed.set()

    def finished(
        self, operation_id: str, outcome: str, result: Any, error: dict[str, Any] | None
    ) -> None:
        report = self._reports.get(operation_id)
        if report is None:
            return
        report.final = CompletionReport(
            lease=LeaseModel(attempt=report.lease.attempt, token=report.lease.token),
            outcome=outcome,
            result=result,
            error=ErrorView(**error) if error else None,
            started_at=report.started_at,
            progress=Progress.model_validate(report.progress) if report.progress else None,
        )
        report.changed.set()

    def abandon(self, operation_id: str) -> None:
        report = self._reports.get(operation_id)
        if report is not None:
            report.abandoned = True
            report.changed.set()

    def undelivered(self) -> list[tuple[str, Lease, dict[str, Any] | None]]:
        """Finished here, not yet recorded there: the backend must keep counting them as ours."""
        return [
            (op_id, r.lease, r.progress)
            for op_id, r in self._reports.items()
            if r.final is not None and not r.abandoned
        ]

    def is_tracking(self, operation_id: str, lease: Lease) -> bool:
        report = self._reports.get(operation_id)
        return report is not None and report.lease == lease

    async def flush(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._idle.is_set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _deliver(self, operation_id: str) -> None:
        report = self._reports[operation_id]
        backoff = 0.05
        try:
            while not report.abandoned:
                if report.final is None:
                    await self._progress_round(operation_id, report)
                    continue
                outcome = await self._send(
                    f"/api/v1/operations/{operation_id}/complete", report.final.model_dump_json()
                )
                if outcome != "retry":
                    if outcome == "stale":
                        log.warning(
                            "result_rejected_as_stale",
                            operation_id=operation_id,
                            attempt=report.lease.attempt,
                        )
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            self._reports.pop(operation_id, None)
            if not self._reports:
                self._idle.set()

    async def _progress_round(self, operation_id: str, report: _Report) -> None:
        await report.changed.wait()
        report.changed.clear()
        delay = report.last_sent + self._interval - time.monotonic()
        if delay > 0 and report.final is None:  # throttle, but a final result cuts the wait short
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_until_final(report), delay)
        if report.final is not None or report.abandoned:
            return
        report.last_sent = time.monotonic()
        body = ProgressReport(
            lease=LeaseModel(attempt=report.lease.attempt, token=report.lease.token),
            progress=Progress.model_validate(report.progress) if report.progress else None,
            started_at=report.started_at,
        )
        if (
            await self._send(f"/api/v1/operations/{operation_id}/progress", body.model_dump_json())
            == "stale"
        ):
            log.warning("lease_lost_abandoning", operation_id=operation_id)
            report.abandoned = True
            self._on_stale(operation_id)

    async def _send(self, path: str, body: str) -> Delivery:
        try:
            response = await self._client.post(
                path, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError:
            return "retry"
        if response.is_success:
            return "delivered"
        if response.status_code in (404, 409):
            return "stale"
        if response.status_code in (401, 403):
            log.error("report_refused", path=path, status=response.status_code)
        return "retry"


async def _until_final(report: _Report) -> None:
    while report.final is None and not report.abandoned:
        await report.changed.wait()
        report.changed.clear()
