"""The health monitor: polls every worker's /health concurrently (bounded), applies the
liveness rules, removes workers unavailable for too long, and probes at once a worker whose
session dropped (so a killed worker is found in milliseconds, not after three intervals)."""

import asyncio
import time
from typing import Any, Literal

import structlog

from workfleet.backend.gateway import HealthCheckFailed, WorkerGateway
from workfleet.backend.orchestrator import HealthReport, Orchestrator
from workfleet.backend.views import reported
from workfleet.domain.workers import Load
from workfleet.protocol import WorkerHealth

log = structlog.get_logger(__name__)
CheckResult = Literal["ok", "failed", "refused"]


class HealthMonitor:
    def __init__(
        self,
        orchestrator: Orchestrator,
        gateway: WorkerGateway,
        *,
        interval_s: float,
        timeout_s: float,
        probe_timeout_s: float,
        concurrency: int,
    ) -> None:
        self._orchestrator = orchestrator
        self._gateway = gateway
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._probe_timeout_s = probe_timeout_s
        self._limit = asyncio.Semaphore(concurrency)
        self._probes: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.check_all()
            await self._orchestrator.remove_expired_workers()
            await asyncio.sleep(max(0.0, self._interval_s - (time.monotonic() - started)))

    async def check_all(self) -> None:
        worker_ids = list(self._orchestrator.workers)
        if worker_ids:
            outcomes = await asyncio.gather(
                *(self.check(worker_id, self._timeout_s) for worker_id in worker_ids),
                return_exceptions=True,
            )
            for worker_id, outcome in zip(worker_ids, outcomes, strict=True):
                if isinstance(outcome, BaseException):  # one surprise must not stop the round
                    log.error("health_check_crashed", worker_id=worker_id, error=repr(outcome))

    async def check(self, worker_id: str, timeout_s: float) -> CheckResult:
        worker = self._orchestrator.workers.get(worker_id)
        if worker is None:
            return "failed"
        async with self._limit:
            try:
                health = await self._gateway.health(worker, timeout_s=timeout_s)
            except HealthCheckFailed as exc:
                log.info("health_check_failed", worker_id=worker_id, detail=str(exc))
                self._orchestrator.apply_health(worker_id, None)
                return "refused" if exc.refused else "failed"
        self._orchestrator.apply_health(worker_id, _report(health))
        return "ok" if health.healthy else "failed"

    def probe_soon(self, worker_id: str) -> None:
        """After a session drop: one quick check; nothing listening means the worker is gone."""
        task = asyncio.create_task(self._probe(worker_id))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe(self, worker_id: str) -> None:
        if await self.check(worker_id, self._probe_timeout_s) == "refused":
            log.warning("worker_gone", worker_id=worker_id)
            self._orchestrator.declare_unreachable(worker_id)


def _report(health: WorkerHealth) -> HealthReport:
    return HealthReport(
        healthy=health.healthy,
        worker_id=health.worker_id,
        instance_id=health.instance_id,
        accepted_seq=health.accepted_seq,
        load=Load(
            current_load=health.current_load,
            cpu_usage_ratio=health.cpu_usage_ratio,
            memory_usage_ratio=health.memory_usage_ratio,
        ),
        running=reported(health.running),
    )
