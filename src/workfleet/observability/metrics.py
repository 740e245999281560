"""Prometheus metrics, each process with its own CollectorRegistry (so every app starts at zero).

Names follow the Prometheus conventions: workfleet_ prefix, base units, _total for counters.
Registry state gauges are computed at scrape time from the live state, with a zero for every
known state, so a dashboard never sees a stale or missing series.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workfleet.domain.workers import WORKER_STATUSES, Worker
from workfleet.protocol import MAX_PRIORITY

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS: Final = (0.005, 0.05, 0.25, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400)
WAIT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600)
PLACEMENT_BUCKETS: Final = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 0.01, 0.05)
PLACEMENT_OUTCOMES: Final = ("placed", "waiting", "none")
TOP_SUBMITTERS: Final = 20  # queue depth by submitter: these many by name, the rest as "other"


class _WorkersCollector(Collector):
    def __init__(self, workers: Callable[[], Iterable[Worker]]) -> None:
        self._workers = workers

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "workfleet_workers",
            "Registered workers by type and state",
            labels=["worker_type", "state"],
        )
        counts: dict[tuple[str, str], int] = {}
        types: set[str] = set()
        for worker in self._workers():
            types.add(worker.worker_type)
            key = (worker.worker_type, worker.status)
            counts[key] = counts.get(key, 0) + 1
        for worker_type in sorted(types):
            for state in WORKER_STATUSES:
                family.add_metric([worker_type, state], counts.get((worker_type, state), 0))
        yield family


QueueDepths = Callable[[], Mapping[tuple[str, int], int]]  # (submitter, priority) -> queued


class _QueueCollector(Collector):
    """Queue depth by priority (every level, zeros included) and by submitter (the
    TOP_SUBMITTERS deepest by name, the rest summed as "other"), read at scrape time."""

    def __init__(self, depths: QueueDepths) -> None:
        self._depths = depths

    def collect(self) -> Iterable[GaugeMetricFamily]:
        by_priority: dict[int, int] = dict.fromkeys(range(MAX_PRIORITY + 1), 0)
        by_submitter: dict[str, int] = {}
        for (submitter, priority), count in self._depths().items():
            by_priority[priority] = by_priority.get(priority, 0) + count
            by_submitter[submitter] = by_submitter.get(submitter, 0) + count
        family = GaugeMetricFamily(
            "workfleet_queue_depth",
            "Operations waiting in the queue by priority",
            labels=["priority"],
        )
        for priority in sorted(by_priority):
            family.add_metric([str(priority)], by_priority[priority])
        yield family
        ranked = sorted(by_submitter.items(), key=lambda item: (-item[1], item[0]))
        family = GaugeMetricFamily(
            "workfleet_queue_depth_by_submitter",
            f"Operations waiting in the queue by submitter (the {TOP_SUBMITTERS} with most "
            'queued by name, the others as "other")',
            labels=["submitter"],
        )
        for submitter, count in ranked[:TOP_SUBMITTERS]:
            family.add_metric([submitter], count)
        if len(ranked) > TOP_SUBMITTERS:
            family.add_metric(["other"], sum(count for _, count in ranked[TOP_SUBMITTERS:]))
        yield family


class BackendMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.submitted = Counter(
            "workfleet_operations_submitted_total",
            "Operations accepted",
            ["operation_type"],
            registry=r,
        )
        self.dispatched = Counter(
            "workfleet_operations_dispatched_total",
            "Dispatches acknowledged by a worker",
            ["operation_type"],
            registry=r,
        )
        self.completed = Counter(
            "workfleet_operations_completed_total",
            "Operations that reached a terminal state",
            ["operation_type", "status"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "workfleet_operation_queue_wait_seconds",
            "Submit to dispatch acknowledgement",
            ["operation_type", "priority"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.placement_decisions = Counter(
            "workfleet_placement_decisions_total",
            "Placement rounds (calls with operations queued): placed one, left one waiting for "
            "a busy worker the policy expects to finish sooner, or none placeable now",
            ["policy", "outcome"],
            registry=r,
        )
        self.placement_seconds = Histogram(
            "workfleet_placement_seconds",
            "Time spent choosing the next operation and its worker",
            buckets=PLACEMENT_BUCKETS,
            registry=r,
        )
        self.dispatch_failures = Counter(
            "workfleet_operation_dispatch_failures_total",
            "Dispatches that did not reach a worker",
            ["reason"],
            registry=r,
        )
        self.attempts_lost = Counter(
            "workfleet_operation_attempts_lost_total",
            "Attempts lost with their worker",
            ["reason"],
            registry=r,
        )
        self.health_checks = Counter(
            "workfleet_worker_health_checks_total", "Worker health checks", ["result"], registry=r
        )
        self.stale_reports = Counter(
            "workfleet_stale_reports_total",
            "Reports refused because their lease was not current",
            ["kind"],
            registry=r,
        )
        self.rejected_submits = Counter(
            "workfleet_operations_rejected_total", "Submits refused", ["reason"], registry=r
        )

    def watch_workers(self, workers: Callable[[], Iterable[Worker]]) -> None:
        self.registry.register(_WorkersCollector(workers))

    def watch_queue(self, depths: QueueDepths) -> None:
        self.registry.register(_QueueCollector(depths))

    def placement_policy(self, policy: str) -> None:
        """Show every outcome of the policy in use from the start, at zero."""
        for outcome in PLACEMENT_OUTCOMES:
            self.placement_decisions.labels(policy, outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class WorkerMetrics:
    def __init__(
        self, state: Callable[[], str], cpu: Callable[[], float], memory: Callable[[], float]
    ):
        self.registry = CollectorRegistry()
        r = self.registry
        self.operations = Counter(
            "workfleet_worker_operations_total",
            "Operations run here, by outcome",
            ["operation_type", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "workfleet_worker_operation_duration_seconds",
            "Operation run time",
            ["operation_type"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge(
            "workfleet_worker_operations_in_progress", "Operations running", registry=r
        )
        self._state, self._cpu, self._memory = state, cpu, memory
        r.register(self._Gauges(self))

    class _Gauges(Collector):
        def __init__(self, outer: "WorkerMetrics") -> None:
            self._outer = outer

        def collect(self) -> Iterable[GaugeMetricFamily]:
            outer = self._outer
            yield GaugeMetricFamily(
                "workfleet_worker_cpu_usage_ratio", "Host CPU use (0..1)", value=outer._cpu()
            )
            yield GaugeMetricFamily(
                "workfleet_worker_memory_usage_ratio",
                "Host memory use (0..1)",
                value=outer._memory(),
            )
            state = GaugeMetricFamily(
                "workfleet_worker_state", "1 for the current state", labels=["state"]
            )
            current = outer._state()
            for name in ("idle", "busy", "draining"):
                state.add_metric([name], 1.0 if name == current else 0.0)
            yield state

    def render(self) -> bytes:
        return generate_latest(self.registry)
