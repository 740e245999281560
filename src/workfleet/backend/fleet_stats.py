"""Fleet figures for the dashboard: the state now, and per-minute throughput and queue depth
over the last hour, sampled in memory (Prometheus keeps the long history)."""

import asyncio
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from workfleet.backend.orchestrator import Orchestrator
from workfleet.domain.workers import WORKER_STATUSES
from workfleet.observability.metrics import BackendMetrics
from workfleet.protocol import FleetStats, MinuteStats

SAMPLE_INTERVAL_S: Final = 2.0
HOUR: Final = timedelta(hours=1)


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
    return FleetStats(
        at=now,
        workers={state: sum(w.status == state for w in workers) for state in WORKER_STATUSES},
        slots_used=sum(len(w.reserved) for w in workers),
        slots_total=sum(w.capabilities.slots for w in workers),
        queue_depth=len(orchestrator.queue),
        running=sum(op.status == "running" for op in orchestrator.active.values()),
        finished_last_hour=sum(m.finished for m in minutes),
        failed_last_hour=sum(m.failed for m in minutes),
        minutes=[
            MinuteStats(at=m.at, finished=m.finished, failed=m.failed, queue_depth=m.queue_peak)
            for m in minutes
        ],
    )
