"""Prometheus metrics, each process with its own CollectorRegistry (so every app starts at zero).

Names follow the Prometheus conventions: workfleet_ prefix, base units, _total for counters.
Registry state gauges are computed at scrape time from the live state, with a zero for every
known state, so a dashboard never sees a stale or missing series; a worker's series go with it
when it leaves the registry. Label values are bounded: worker ids (one per live worker, on the
backend only), the domain's own words (states, outcomes, reasons), route templates, and error
types from an allow-list. Workers carry no worker_id label: Prometheus attaches it (and
worker_type) from the backend's service discovery.
"""

import builtins
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import prometheus_client
from cryptography import x509
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from workfleet import __version__
from workfleet.domain.operations import Operation
from workfleet.domain.workers import WORKER_STATUSES, Worker
from workfleet.observability.correlation import trace_exemplar
from workfleet.protocol import MAX_PRIORITY
from workfleet.settings import TlsPaths

# `_created` series double every counter and histogram for a value nobody queries
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS: Final = (0.005, 0.05, 0.25, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400)
WAIT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600)
PLACEMENT_BUCKETS: Final = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 0.01, 0.05)
HTTP_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
PLACEMENT_OUTCOMES: Final = ("placed", "waiting", "none")
TOP_SUBMITTERS: Final = 20  # queue depth by submitter: these many by name, the rest as "other"
# backend/gateway.py DispatchKind, less "accepted"
DISPATCH_FAILURE_REASONS: Final = ("refused", "unreachable", "unconfirmed")
HEALTH_CHECK_RESULTS: Final = ("success", "failure")
# the worker left on purpose (drain, SIGTERM) / was unavailable past --worker-removal
DEREGISTRATION_REASONS: Final = ("deregistered", "removed")
# worker -> backend calls that can fail: registering, holding the session, reporting progress
# and results, announcing a drain, deregistering
CALLBACKS: Final = ("register", "session", "report", "drain", "deregister")
WORKER_STATES: Final = ("idle", "busy", "draining")
CERTIFICATES: Final = ("identity", "ca")
# error types of failed operations: the exception class when it is one of these, else "other"
KNOWN_ERRORS: Final = frozenset(
    {name for name, value in vars(builtins).items() if isinstance(value, type)}
    | {"crashed", "DataError", "ArtifactMissing", "ValidationError", "DiagnosticFailure"}
)


def error_type(error: Mapping[str, Any] | None) -> str:
    """A failed operation's error as a bounded label value: `crashed` (its process died), the
    exception class for well-known ones (ValueError, DataError...), else `other`."""
    if not error:
        return "unknown"
    kind = str(error.get("type") or "")
    if kind == "exception":
        name = str(error.get("message") or "").partition(":")[0].strip()
        return name if name in KNOWN_ERRORS else "other"
    return kind if kind in KNOWN_ERRORS else "other"


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The registry in the format the scraper asked for: OpenMetrics (with exemplars) for
    Prometheus, the classic text format otherwise."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


class _WorkersCollector(Collector):
    """The registry as the backend sees it, read at scrape time: workers by type and state,
    each worker's state (all four states, 1 for its own) and when it last passed a health
    check. A worker removed from the registry has no series from the next scrape on."""

    def __init__(self, workers: Callable[[], Iterable[Worker]]) -> None:
        self._workers = workers

    def collect(self) -> Iterable[GaugeMetricFamily]:
        began = time.perf_counter()
        family = GaugeMetricFamily(
            "workfleet_workers",
            "Registered workers by type and state",
            labels=["worker_type", "state"],
        )
        per_worker = GaugeMetricFamily(
            "workfleet_registry_worker_state",
            "Each registered worker's state as the backend sees it (1 for the current one)",
            labels=["worker_id", "worker_type", "state"],
        )
        last_seen = GaugeMetricFamily(
            "workfleet_worker_last_seen_timestamp_seconds",
            "When each registered worker last passed a health check (or registered)",
            labels=["worker_id", "worker_type"],
        )
        counts: dict[tuple[str, str], int] = {}
        types: set[str] = set()
        for worker in sorted(self._workers(), key=lambda w: w.worker_id):
            status = worker.status
            types.add(worker.worker_type)
            key = (worker.worker_type, status)
            counts[key] = counts.get(key, 0) + 1
            for state in WORKER_STATUSES:
                per_worker.add_metric(
                    [worker.worker_id, worker.worker_type, state], 1.0 if state == status else 0.0
                )
            seen = worker.last_healthy_at or worker.registered_at
            last_seen.add_metric([worker.worker_id, worker.worker_type], seen.timestamp())
        for worker_type in sorted(types):
            for state in WORKER_STATUSES:
                family.add_metric([worker_type, state], counts.get((worker_type, state), 0))
        yield family
        yield per_worker
        yield last_seen
        yield GaugeMetricFamily(
            "workfleet_registry_collect_duration_seconds",
            "Time the last scrape spent reading the worker registry",
            value=time.perf_counter() - began,
        )


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


class _OperationsCollector(Collector):
    """Unfinished operations by status and type, read at scrape time: `pending` (queued, or
    sent and not yet acknowledged) and `running`; zero for every known type."""

    def __init__(
        self, operations: Callable[[], Iterable[Operation]], known: Callable[[], Iterable[str]]
    ) -> None:
        self._operations = operations
        self._known = known

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts: dict[str, dict[str, int]] = {"pending": {}, "running": {}}
        for name in self._known():
            for by_type in counts.values():
                by_type[name] = 0
        for op in self._operations():
            if op.status in counts:
                seen = counts[op.status]
                seen[op.operation_type] = seen.get(op.operation_type, 0) + 1
        for status, help_text in (
            ("pending", "Operations waiting for a worker (queued or being dispatched)"),
            ("running", "Operations a worker has acknowledged and not finished"),
        ):
            family = GaugeMetricFamily(
                f"workfleet_operations_{status}", help_text, labels=["operation_type"]
            )
            for name, count in sorted(counts[status].items()):
                family.add_metric([name], count)
            yield family


class _CertificateCollector(Collector):
    """mtls: the validity window of this process's own certificate ("identity") and of the CA
    it trusts ("ca"; of a bundle during a CA rotation, the one that lasts longest), read from
    the files at scrape time (a renewed or reloaded certificate shows at once). A file that
    cannot be read has no series (the process logs the TLS error where it uses it)."""

    def __init__(self, paths: TlsPaths) -> None:
        self._paths = {"identity": paths.cert, "ca": paths.ca}
        self._cache: dict[Path, tuple[tuple[int, int], tuple[float, float] | None]] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        not_before = GaugeMetricFamily(
            "workfleet_tls_certificate_not_before_timestamp_seconds",
            "Start of the certificate's validity",
            labels=["certificate"],
        )
        not_after = GaugeMetricFamily(
            "workfleet_tls_certificate_not_after_timestamp_seconds",
            "End of the certificate's validity (renew before it)",
            labels=["certificate"],
        )
        for name in CERTIFICATES:
            window = self._window(self._paths[name], newest=name == "ca")
            if window is not None:
                not_before.add_metric([name], window[0])
                not_after.add_metric([name], window[1])
        yield not_before
        yield not_after

    def _window(self, path: Path, *, newest: bool) -> tuple[float, float] | None:
        try:
            status = path.stat()
        except OSError:
            return None
        stamp = (status.st_mtime_ns, status.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        window = _validity(path, newest=newest)
        self._cache[path] = (stamp, window)
        return window


def _validity(path: Path, *, newest: bool) -> tuple[float, float] | None:
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not certificates:
        return None
    chosen = max(certificates, key=lambda c: c.not_valid_after_utc) if newest else certificates[0]
    return chosen.not_valid_before_utc.timestamp(), chosen.not_valid_after_utc.timestamp()


class BackendMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._operation_types: tuple[str, ...] = ()
        self.tls_reload_failures: Counter | None = None
        self.build_info = Info("workfleet_build", "The backend's version", registry=r)
        self.build_info.info({"version": __version__})
        self.submitted = Counter(
            "workfleet_operations_submitted_total",
            "Operations accepted",
            ["operation_type"],
            registry=r,
        )
        self.dispatched = Counter(
            "workfleet_operations_dispatched_total",
            "Dispatches acknowledged by a worker",
            ["operation_type", "worker_type"],
            registry=r,
        )
        self.completed = Counter(
            "workfleet_operations_completed_total",
            "Operations that reached a terminal state",
            ["operation_type", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "workfleet_operation_duration_seconds",
            "Submit to terminal state, by final status (queue wait and every attempt included)",
            ["operation_type", "status"],
            buckets=DURATION_BUCKETS,
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
            "Dispatches that did not reach a worker: refused (full, draining), unreachable, "
            "or unconfirmed (no answer in time, or a server error)",
            ["operation_type", "reason"],
            registry=r,
        )
        self.attempts_lost = Counter(
            "workfleet_operation_attempts_lost_total",
            "Attempts lost with their worker",
            ["reason"],
            registry=r,
        )
        self.health_checks = Counter(
            "workfleet_worker_health_checks_total",
            "Worker health checks by outcome",
            ["worker_type", "result"],
            registry=r,
        )
        self.registrations = Counter(
            "workfleet_worker_registrations_total",
            "Workers that joined the registry (a new worker id, or a new process under a known "
            "one)",
            ["worker_type"],
            registry=r,
        )
        self.deregistrations = Counter(
            "workfleet_worker_deregistrations_total",
            "Workers that left the registry: deregistered (on purpose) or removed (unavailable "
            "for too long)",
            ["worker_type", "reason"],
            registry=r,
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
        self.http_requests = Counter(
            "workfleet_http_requests_total",
            "HTTP requests served, by method, route template and status code",
            ["method", "route", "code"],
            registry=r,
        )
        self.http_duration = Histogram(
            "workfleet_http_request_duration_seconds",
            "HTTP request duration by route template (until the response ends)",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )

    def known_types(self, operation_types: Iterable[str], worker_types: Iterable[str]) -> None:
        """Series for every known type exist from the start, at zero."""
        self._operation_types = tuple(sorted(set(operation_types)))
        for operation_type in self._operation_types:
            for reason in DISPATCH_FAILURE_REASONS:
                self.dispatch_failures.labels(operation_type, reason)
        for worker_type in sorted(set(worker_types)):
            self.registrations.labels(worker_type)
            for result in HEALTH_CHECK_RESULTS:
                self.health_checks.labels(worker_type, result)
            for reason in DEREGISTRATION_REASONS:
                self.deregistrations.labels(worker_type, reason)

    def watch_workers(self, workers: Callable[[], Iterable[Worker]]) -> None:
        self.registry.register(_WorkersCollector(workers))

    def watch_queue(self, depths: QueueDepths) -> None:
        self.registry.register(_QueueCollector(depths))

    def watch_operations(self, operations: Callable[[], Iterable[Operation]]) -> None:
        self.registry.register(_OperationsCollector(operations, lambda: self._operation_types))

    def watch_certificates(self, paths: TlsPaths) -> None:
        """mtls: certificate validity, and reloads of the listener's files that failed."""
        self.registry.register(_CertificateCollector(paths))
        self.tls_reload_failures = _reload_failures(self.registry)

    def placement_policy(self, policy: str) -> None:
        """Show every outcome of the policy in use from the start, at zero."""
        for outcome in PLACEMENT_OUTCOMES:
            self.placement_decisions.labels(policy, outcome)

    def finished(self, op: Operation) -> None:
        """An operation reached its terminal state: counted, and its whole life timed (with
        its trace as exemplar, when it has one)."""
        self.completed.labels(op.operation_type, op.status).inc()
        finished = op.finished_at
        if finished is not None and (finished.tzinfo is None) == (op.created_at.tzinfo is None):
            seconds = max(0.0, (finished - op.created_at).total_seconds())
            self.duration.labels(op.operation_type, op.status).observe(
                seconds, exemplar=trace_exemplar(op.trace_id)
            )

    def http_request(
        self, method: str, route: str, code: int, seconds: float, exemplar: dict[str, str] | None
    ) -> None:
        """observability/http.py's observer."""
        self.http_requests.labels(method, route, str(code)).inc()
        self.http_duration.labels(route).observe(seconds, exemplar=exemplar)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _reload_failures(registry: CollectorRegistry) -> Counter:
    return Counter(
        "workfleet_tls_reload_failures_total",
        "Changed certificate files that could not be loaded (the old ones keep serving)",
        registry=registry,
    )


class WorkerMetrics:
    def __init__(
        self,
        state: Callable[[], str],
        cpu: Callable[[], float],
        memory: Callable[[], float],
        *,
        operation_types: Iterable[str] = (),
        slots: int = 1,
    ):
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU seconds, open fds
        self.tls_reload_failures: Counter | None = None
        self.build_info = Info("workfleet_worker_build", "The worker's version", registry=r)
        self.build_info.info({"version": __version__})
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
            "workfleet_worker_operations_in_progress",
            "Operations running here",
            ["operation_type"],
            registry=r,
        )
        self.max_concurrent = Gauge(
            "workfleet_worker_max_concurrent_operations",
            "Operations this worker runs at once (its slots)",
            registry=r,
        )
        self.max_concurrent.set(slots)
        self.last_progress = Gauge(
            "workfleet_worker_operation_last_progress_timestamp_seconds",
            "When an operation of this type last started or reported progress here",
            ["operation_type"],
            registry=r,
        )
        self.errors = Counter(
            "workfleet_worker_operation_errors_total",
            "Failed operations by error type (the exception class if well known, crashed, "
            "or other)",
            ["operation_type", "error_type"],
            registry=r,
        )
        self.callback_failures = Counter(
            "workfleet_worker_callback_failures_total",
            "Calls to the backend that failed, by call",
            ["callback"],
            registry=r,
        )
        for operation_type in sorted(set(operation_types)):
            self.in_progress.labels(operation_type)
        for callback in CALLBACKS:
            self.callback_failures.labels(callback)
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
            for name in WORKER_STATES:
                state.add_metric([name], 1.0 if name == current else 0.0)
            yield state

    def started(self, operation_type: str) -> None:
        self.in_progress.labels(operation_type).inc()
        self.last_progress.labels(operation_type).set_to_current_time()

    def progressed(self, operation_type: str) -> None:
        self.last_progress.labels(operation_type).set_to_current_time()

    def finished(
        self,
        operation_type: str,
        outcome: str,
        seconds: float | None,
        error: Mapping[str, Any] | None,
    ) -> None:
        """`seconds` None: it never started (cancelled while it waited for its process)."""
        if seconds is not None:
            self.in_progress.labels(operation_type).dec()
            # the exemplar is the current span's trace: tracing sets it around the job's events
            self.duration.labels(operation_type).observe(
                max(0.0, seconds), exemplar=trace_exemplar()
            )
        self.operations.labels(operation_type, outcome).inc()
        if outcome == "failed":
            self.errors.labels(operation_type, error_type(error)).inc()

    def callback_failed(self, callback: str) -> None:
        self.callback_failures.labels(callback if callback in CALLBACKS else "other").inc()

    def watch_certificates(self, paths: TlsPaths) -> None:
        """mtls: certificate validity, and reloads of the listener's files that failed."""
        self.registry.register(_CertificateCollector(paths))
        self.tls_reload_failures = _reload_failures(self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
