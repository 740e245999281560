"""Fleet figures for the dashboard: the state now (queue depth per priority and per submitter
included), and per-minute throughput and queue depth over the last hour, sampled in memory
(Prometheus keeps the long history)."""

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from workfleet.backend.orchestrator import Orchestrator
from workfleet.domain.workers import WORKER_STATUSES
from workfleet.observability.metrics import TOP_SUBMITTERS, BackendMetrics
from workfleet.protocol import FleetStats, MinuteStats, PriorityDepth, SubmitterDepth

SAMPLE_INTERVAL_S: Final = 2.0
HOUR: Final = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class QueueBreakdown:
    by_priority: list[PriorityDepth]  # highest priority first, empty ones left out
    by_submitter: list[SubmitterDepth]  # most waiting first, the top TOP_SUBMITTERS
    other_submitters: int  # what the submitters left out of by_submitter have waiting


def queue_breakdown(
    depths: Mapping[tuple[str, int], int], *, top: int = TOP_SUBMITTERS
) -> QueueBreakdown:
    """FairQueue.depths() ((submitter, priority) -> waiting) as the dashboard shows it, with the
    same top-N cut as the workfleet_queue_depth_by_submitter metric."""
    by_priority: dict[int, int] = {}
    by_submitter: dict[str, int] = {}
    for (submitter, priority), count in depths.items():
        if count > 0:
            by_priority[priority] = by_priority.get(priority, 0) + count
            by_submitter[submitter] = by_submitter.get(submitter, 0) + count
    ranked = sorted(by_submitter.items(), key=lambda item: (-item[1], item[0]))
    return QueueBreakdown(
        by_priority=[
            PriorityDepth(priority=priority, queued=count)
            for priority, count in sorted(by_priority.items(), reverse=True)
        ],
        by_submitter=[
            SubmitterDepth(submitter=submitter, queued=count) for submitter, count in ranked[:top]
        ],
        other_submitters=sum(count for _, count in ranked[top:]),
    )


@dataclass(frozen=True, slots=True)
class Totals:
    """Operations finished since the backend started."""

    finished: int = 0
    failed: int = 0


@dataclass(slots=True)
class Minute:
    at: datetime
    finished: int = 0
    failed: int = 0
    queue_peak: int = 0


class FleetHistory:
    """One bucket per minute for the last hour: what finished in it, the longest queue seen."""

    def __init__(self) -> None:
        self._minutes: deque[Minute] = deque(maxlen=60)
        self._seen = Totals()

    def record(self, at: datetime, *, queue_depth: int, totals: Totals) -> None:
        start = at.replace(second=0, microsecond=0)
        if not self._minutes or self._minutes[-1].at != start:
            self._minutes.append(Minute(start))
        minute = self._minutes[-1]
        minute.finished += totals.finished - self._seen.finished
        minute.failed += totals.failed - self._seen.failed
        minute.queue_peak = max(minute.queue_peak, queue_depth)
        self._seen = totals

    def last_hour(self, now: datetime) -> list[Minute]:
        return [minute for minute in self._minutes if minute.at > now - HOUR]


def finished_totals(metrics: BackendMetrics) -> Totals:
    """Read from workfleet_operations_completed_total: the figures Prometheus sees too."""
    finished = failed = 0.0
    for family in metrics.completed.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                finished += sample.value
                if sample.labels.get("status") == "failed":
                    failed += sample.value
    return Totals(int(finished), int(failed))


async def sample_forever(
    history: FleetHistory, orchestrator: Orchestrator, metrics: BackendMetrics
) -> None:
    while True:
        history.record(
            orchestrator.clock(),
            queue_depth=len(orchestrator.queue),
            totals=finished_totals(metrics),
        )
        await asyncio.sleep(SAMPLE_INTERVAL_S)


def fleet_stats(orchestrator: Orchestrator, history: FleetHistory) -> FleetStats:
    now = orchestrator.clock()
    workers = list(orchestrator.workers.values())
    minutes = history.last_hour(now)
    queue = queue_breakdown(orchestrator.queue.depths())
    return FleetStats(
        at=now,
        placement=orchestrator.config.placement,
        workers={state: sum(w.status == state for w in workers) for state in WORKER_STATUSES},
        slots_used=sum(len(w.reserved) for w in workers),
        slots_total=sum(w.capabilities.slots for w in workers),
        queue_depth=len(orchestrator.queue),
        queue_by_priority=queue.by_priority,
        queue_by_submitter=queue.by_submitter,
        queue_other_submitters=queue.other_submitters,
        running=sum(op.status == "running" for op in orchestrator.active.values()),
        finished_last_hour=sum(m.finished for m in minutes),
        failed_last_hour=sum(m.failed for m in minutes),
        minutes=[
            MinuteStats(at=m.at, finished=m.finished, failed=m.failed, queue_depth=m.queue_peak)
            for m in minutes
        ],
    )
