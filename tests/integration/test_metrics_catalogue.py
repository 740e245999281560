"""The metric catalogue as real processes expose it: a backend and workers that ran operations
(completed, failed, crashed, cancelled), scraped over HTTP and parsed.

- naming: the `workfleet_` prefix, base units in names (`_seconds`, `_bytes`, `_ratio`; never
  percent or milliseconds), `_total` on every counter and nowhere else, `_timestamp_seconds` for
  times of day, `_info` only on info metrics;
- cardinality: every family has a label allow-list (a new metric fails here until it is added
  on purpose), label values are the domain's words or bounded sets (route templates, never raw
  paths or ids), workers carry no `worker_id` label (service discovery attaches it), and series
  budgets per worker hold;
- `promtool check metrics` accepts each exposition; the OpenMetrics one parses;
- mtls mode: certificate validity on the backend and on a worker that enrolled with a bootstrap
  token, and service discovery that tells Prometheus to scrape workers over https.
"""

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from observability_assets import binary
from workfleet.domain.operations import TERMINAL
from workfleet.domain.workers import WORKER_STATUSES
from workfleet.harness.cluster import Cluster, wait_for
from workfleet.observability.http import METHODS, UNMATCHED
from workfleet.observability.metrics import (
    CALLBACKS,
    CERTIFICATES,
    DEREGISTRATION_REASONS,
    DISPATCH_FAILURE_REASONS,
    HEALTH_CHECK_RESULTS,
    KNOWN_ERRORS,
    WORKER_STATES,
)
from workfleet.operations.registry import load_operation_types
from workfleet.security.identity import Identity

WORKERS = {"w-bt-1": ("backtesting", 2), "w-tr-1": ("training", 1)}
OPERATIONS = [
    {"action": "noop"},
    {"action": "sleep", "seconds": 0.4, "steps": 4},
    {"action": "fail"},
    {"action": "crash"},
]

# Series budgets. A worker's own registry: at most 2 operation types run on a worker of one
# type, each with a 16-series duration histogram, 3 outcomes, in progress and last progress
# (~42), plus state, slots, callbacks, host ratios and build info (~13), plus failures by
# error type; the process collector adds 6. The backend: what one more worker adds (its
# state and last-seen series; the per-type families are shared).
WORKER_OWN_BUDGET = 60  # workfleet_* series on one worker
WORKER_TOTAL_BUDGET = 70  # everything a worker exposes
BACKEND_PER_WORKER_BUDGET = 10  # series of the backend that carry one worker's id

BACKEND_LABELS: dict[str, set[str]] = {
    "workfleet_build_info": {"version"},
    "workfleet_operations_submitted_total": {"operation_type"},
    "workfleet_operations_dispatched_total": {"operation_type", "worker_type"},
    "workfleet_operations_completed_total": {"operation_type", "status"},
    "workfleet_operations_rejected_total": {"reason"},
    "workfleet_operation_duration_seconds": {"operation_type", "status"},
    "workfleet_operation_queue_wait_seconds": {"operation_type", "priority"},
    "workfleet_operation_dispatch_failures_total": {"operation_type", "reason"},
    "workfleet_operation_attempts_lost_total": {"reason"},
    "workfleet_placement_decisions_total": {"policy", "outcome"},
    "workfleet_placement_seconds": set(),
    "workfleet_stale_reports_total": {"kind"},
    "workfleet_worker_health_checks_total": {"worker_type", "result"},
    "workfleet_worker_registrations_total": {"worker_type"},
    "workfleet_worker_deregistrations_total": {"worker_type", "reason"},
    "workfleet_http_requests_total": {"method", "route", "code"},
    "workfleet_http_request_duration_seconds": {"route"},
    "workfleet_workers": {"worker_type", "state"},
    "workfleet_registry_worker_state": {"worker_id", "worker_type", "state"},
    "workfleet_worker_last_seen_timestamp_seconds": {"worker_id", "worker_type"},
    "workfleet_registry_collect_duration_seconds": set(),
    "workfleet_operations_pending": {"operation_type"},
    "workfleet_operations_running": {"operation_type"},
    "workfleet_queue_depth": {"priority"},
    "workfleet_queue_depth_by_submitter": {"submitter"},
}
WORKER_LABELS: dict[str, set[str]] = {
    "workfleet_worker_build_info": {"version"},
    "workfleet_worker_operations_total": {"operation_type", "status"},
    "workfleet_worker_operation_duration_seconds": {"operation_type"},
    "workfleet_worker_operations_in_progress": {"operation_type"},
    "workfleet_worker_max_concurrent_operations": set(),
    "workfleet_worker_operation_last_progress_timestamp_seconds": {"operation_type"},
    "workfleet_worker_operation_errors_total": {"operation_type", "error_type"},
    "workfleet_worker_callback_failures_total": {"callback"},
    "workfleet_worker_cpu_usage_ratio": set(),
    "workfleet_worker_memory_usage_ratio": set(),
    "workfleet_worker_state": {"state"},
    # the client library's process collector: RSS, CPU seconds, open fds
    "process_virtual_memory_bytes": set(),
    "process_resident_memory_bytes": set(),
    "process_start_time_seconds": set(),
    "process_cpu_seconds_total": set(),
    "process_open_fds": set(),
    "process_max_fds": set(),
}
MTLS_LABELS: dict[str, set[str]] = {
    "workfleet_tls_certificate_not_before_timestamp_seconds": {"certificate"},
    "workfleet_tls_certificate_not_after_timestamp_seconds": {"certificate"},
    "workfleet_tls_reload_failures_total": set(),
}
OPERATION_TYPES = set(load_operation_types())
LABEL_VALUES: dict[str, set[str]] = {
    "status": set(TERMINAL),
    "error_type": set(KNOWN_ERRORS) | {"other", "unknown"},
    "callback": set(CALLBACKS),
    "result": set(HEALTH_CHECK_RESULTS),
    "method": set(METHODS) | {"other"},
    "certificate": set(CERTIFICATES),
    "operation_type": OPERATION_TYPES,
    "worker_type": {"backtesting", "training", "unknown"},
}
UNIT_WORDS = re.compile(r"percent|_ms\b|_ms_|millis|_[kmg]b\b|_[kmg]b_|minutes|hours|_mins?\b")
NEEDS_UNIT = re.compile(r"duration|latency|wait|time|age|memory|size|_seconds")
ROUTE = re.compile(r"(/([a-z0-9._-]+|\{[a-z_]+\}))+|/")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    documentation: str
    samples: list[Sample]

    @property
    def exposed(self) -> str:
        """The name queries use: counters with their `_total`."""
        return f"{self.name}_total" if self.type == "counter" else self.name


@dataclass
class Scraped:
    """Each process's /metrics: the text, and its families parsed."""

    text: dict[str, str]
    operation_ids: list[str]

    def families(self, process: str) -> dict[str, Family]:
        found = {}
        for family in text_string_to_metric_families(self.text[process]):
            samples = [Sample(s.name, dict(s.labels), s.value) for s in family.samples]
            parsed = Family(family.name, family.type, family.documentation, samples)
            found[parsed.exposed] = parsed
        return found


def _scrape(url: str, headers: dict[str, str], **options: object) -> str:
    with httpx.Client(trust_env=False, timeout=10, **options) as http:  # type: ignore[arg-type]
        answer = http.get(f"{url}/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.text


async def _run(cluster: Cluster) -> list[str]:
    await cluster.start_backend()
    for worker_id, (worker_type, slots) in WORKERS.items():
        await cluster.start_worker(worker_id, worker_type=worker_type, slots=slots)
    await cluster.wait_workers(*WORKERS)
    async with cluster.client() as client:
        ops = [await client.submit("diagnostic", params) for params in OPERATIONS]
        cancelled = await client.submit("diagnostic", {"action": "sleep", "seconds": 30})
        await wait_for(lambda: _running(cluster, cancelled.operation_id), what="the sleep to start")
        await client.cancel(cancelled.operation_id)
        finals = [await client.wait(op.operation_id, timeout_s=30) for op in [*ops, cancelled]]
    assert sorted(op.status for op in finals) == sorted(
        ["completed", "completed", "failed", "failed", "cancelled"]
    )
    return [op.operation_id for op in finals]


async def _running(cluster: Cluster, operation_id: str) -> bool:
    async with cluster.client() as client:
        return (await client.get(operation_id)).status == "running"


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    cluster = Cluster(tmp_path_factory.mktemp("catalogue") / "cluster")
    try:
        operation_ids = asyncio.run(_run(cluster))
        time.sleep(0.3)  # one more health round: every worker's view is current
        auth = {"Authorization": f"Bearer {cluster.token}"}
        text = {"backend": _scrape(cluster.url, auth)}
        for worker_id, process in cluster.workers.items():
            text[worker_id] = _scrape(f"http://127.0.0.1:{process.port}", auth)
        openmetrics = {"Accept": "application/openmetrics-text;version=1.0.0", **auth}
        text["backend-openmetrics"] = _scrape(cluster.url, openmetrics)
        yield Scraped(text, operation_ids)
    finally:
        asyncio.run(cluster.stop())


PROCESSES = ["backend", *WORKERS]


def _allowed(process: str) -> dict[str, set[str]]:
    return BACKEND_LABELS if process == "backend" else WORKER_LABELS


# ---- naming -------------------------------------------------------------------------------------


@pytest.mark.parametrize("process", PROCESSES)
def test_names_carry_the_prefix_a_base_unit_and_total_on_counters(
    scraped: Scraped, process: str
) -> None:
    for name, family in scraped.families(process).items():
        assert name.startswith("workfleet_") or name.startswith("process_"), name
        assert not UNIT_WORDS.search(name), f"{name}: not a base unit"
        assert family.documentation, f"{name}: no HELP"
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith("_total"), sample.name
            else:
                assert not sample.name.endswith("_total"), f"{sample.name}: a {family.type}"
        if family.type == "histogram":
            assert name.endswith(("_seconds", "_bytes")), f"{name}: a histogram without a unit"
        if "timestamp" in name:
            assert name.endswith("_timestamp_seconds"), name
        if family.type == "gauge" and NEEDS_UNIT.search(name):
            assert name.endswith(("_seconds", "_bytes", "_ratio")), f"{name}: which unit?"
        if name.endswith("_ratio"):
            assert all(0 <= s.value <= 1 for s in family.samples), f"{name}: not 0..1"
        if name.endswith("_info"):
            assert family.type == "gauge" and all(s.value == 1 for s in family.samples)


# ---- cardinality --------------------------------------------------------------------------------


@pytest.mark.parametrize("process", PROCESSES)
def test_every_family_is_known_and_its_labels_are_allowed(scraped: Scraped, process: str) -> None:
    allowed = _allowed(process)
    families = scraped.families(process)
    unknown = set(families) - set(allowed)
    assert not unknown, f"new metrics: add them to the allow-list on purpose: {sorted(unknown)}"
    for name, family in families.items():
        for sample in family.samples:
            labels = set(sample.labels) - ({"le"} if family.type == "histogram" else set())
            assert labels <= allowed[name], f"{sample.name}{sample.labels}"
            if process != "backend":
                assert "worker_id" not in sample.labels  # Prometheus attaches it from SD


@pytest.mark.parametrize("process", PROCESSES)
def test_label_values_are_bounded_words_never_ids_or_paths(scraped: Scraped, process: str) -> None:
    states = set(WORKER_STATUSES) if process == "backend" else set(WORKER_STATES)
    for family in scraped.families(process).values():
        for sample in family.samples:
            for label, value in sample.labels.items():
                where = f"{sample.name}{sample.labels}"
                if label in LABEL_VALUES:
                    assert value in LABEL_VALUES[label], where
                if label == "state":
                    assert value in states, where
                if label == "reason" and family.name.endswith("dispatch_failures"):
                    assert value in DISPATCH_FAILURE_REASONS, where
                if label == "reason" and family.name.endswith("deregistrations"):
                    assert value in DEREGISTRATION_REASONS, where
                if label == "route":
                    assert value == UNMATCHED or ROUTE.fullmatch(value), where
                    assert not re.search(r"/(op_[0-9a-f]+|w-[a-z]+-\d)(/|$)", value), where
                if label == "code":
                    assert re.fullmatch(r"[1-5]\d\d", value), where
    for operation_id in scraped.operation_ids:
        assert operation_id not in scraped.text[process]


def test_the_backend_counts_requests_by_route_template(scraped: Scraped) -> None:
    routes = {
        s.labels["route"]
        for s in scraped.families("backend")["workfleet_http_requests_total"].samples
    }
    assert "/api/v1/operations/{operation_id}" in routes
    assert "/api/v1/workers/{worker_id}/reports" in routes
    assert "/api/v1/workers/register" in routes


@pytest.mark.parametrize("worker_id", list(WORKERS))
def test_a_worker_stays_within_its_series_budget(scraped: Scraped, worker_id: str) -> None:
    families = scraped.families(worker_id).values()
    own = sum(len(f.samples) for f in families if f.name.startswith("workfleet_"))
    total = sum(len(f.samples) for f in families)
    print(f"{worker_id}: {own} workfleet_ series, {total} in all")
    assert own <= WORKER_OWN_BUDGET
    assert total <= WORKER_TOTAL_BUDGET


def test_each_worker_costs_the_backend_a_few_series(scraped: Scraped) -> None:
    per_worker: dict[str, int] = {}
    for family in scraped.families("backend").values():
        for sample in family.samples:
            if "worker_id" in sample.labels:
                worker_id = sample.labels["worker_id"]
                per_worker[worker_id] = per_worker.get(worker_id, 0) + 1
    print(f"backend series per worker: {per_worker}")
    assert set(per_worker) == set(WORKERS)
    assert max(per_worker.values()) <= BACKEND_PER_WORKER_BUDGET


def test_what_the_fleet_did_is_in_the_numbers(scraped: Scraped) -> None:
    backend = scraped.families("backend")
    worker = scraped.families("w-bt-1")
    completed = {
        s.labels["status"]: s.value
        for s in backend["workfleet_operations_completed_total"].samples
        if s.labels["operation_type"] == "diagnostic"
    }
    assert completed == {"completed": 2, "failed": 2, "cancelled": 1}
    errors = {
        s.labels["error_type"]: s.value
        for name in ("w-bt-1", "w-tr-1")
        for s in scraped.families(name)["workfleet_worker_operation_errors_total"].samples
    }
    assert errors == {"DiagnosticFailure": 1, "crashed": 1}
    states = {
        (s.labels["worker_id"], s.labels["state"]): s.value
        for s in backend["workfleet_registry_worker_state"].samples
    }
    assert len(states) == len(WORKERS) * len(WORKER_STATUSES)  # every state, zeros included
    assert {k for k, v in states.items() if v == 1} == {(w, "available") for w in WORKERS}
    slots = worker["workfleet_worker_max_concurrent_operations"].samples[0].value
    assert slots == WORKERS["w-bt-1"][1]


# ---- promtool and OpenMetrics -------------------------------------------------------------------


@pytest.mark.parametrize("process", PROCESSES)
def test_promtool_check_metrics_accepts_the_exposition(scraped: Scraped, process: str) -> None:
    done = subprocess.run(
        [binary("promtool"), "check", "metrics"],
        input=scraped.text[process],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_openmetrics_exposition_parses(scraped: Scraped) -> None:
    text = scraped.text["backend-openmetrics"]
    names = {family.name for family in parse_openmetrics(text)}
    assert "workfleet_operation_duration_seconds" in names
    assert text.endswith("# EOF\n")
    assert "_created" not in text  # disabled: one series per counter nobody queries


# ---- mtls: certificates and service discovery over https -----------------------------------------


@dataclass
class MtlsScrape:
    backend: str
    worker: str
    targets: list[dict[str, object]]
    now: float


async def _mtls_scrape(cluster: Cluster) -> MtlsScrape:
    await cluster.start_backend()
    token = cluster.bootstrap_token("w-m-1")
    await cluster.start_worker(
        "w-m-1", issue_certificate=False, env={"WORKFLEET_BOOTSTRAP_TOKEN": token}
    )
    await cluster.wait_workers("w-m-1")
    monitoring = cluster.tls(cluster.issue(Identity("monitoring")))
    async with httpx.AsyncClient(trust_env=False, verify=monitoring or True, timeout=10) as http:
        backend = await http.get(f"{cluster.url}/metrics")
        targets = await http.get(f"{cluster.url}/api/v1/prometheus/targets")
        group = targets.json()[0]
        path = group["labels"]["__metrics_path__"]
        worker = await http.get(f"https://{group['targets'][0]}{path}")
    for answer in (backend, targets, worker):
        assert answer.status_code == 200, answer.text
    return MtlsScrape(backend.text, worker.text, targets.json(), time.time())


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MtlsScrape]:
    cluster = Cluster(tmp_path_factory.mktemp("catalogue-mtls") / "cluster", auth_mode="mtls")
    try:
        yield asyncio.run(_mtls_scrape(cluster))
    finally:
        asyncio.run(cluster.stop())


def test_mtls_service_discovery_says_scrape_workers_over_https(mtls: MtlsScrape) -> None:
    assert len(mtls.targets) == 1
    assert mtls.targets[0]["labels"] == {
        "worker_id": "w-m-1",
        "worker_type": "backtesting",
        "__scheme__": "https",
        "__metrics_path__": "/metrics",
    }


@pytest.mark.parametrize("process", ["backend", "worker"])
def test_mtls_processes_export_their_certificates_validity(mtls: MtlsScrape, process: str) -> None:
    text = getattr(mtls, process)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    allowed = {**(BACKEND_LABELS if process == "backend" else WORKER_LABELS), **MTLS_LABELS}
    unknown = {f.name for f in families.values()} - {n.removesuffix("_total") for n in allowed}
    assert not unknown
    window = {}
    for edge in ("before", "after"):
        family = families[f"workfleet_tls_certificate_not_{edge}_timestamp_seconds"]
        window[edge] = {s.labels["certificate"]: s.value for s in family.samples}
    assert set(window["before"]) == set(window["after"]) == set(CERTIFICATES)
    for certificate in CERTIFICATES:
        assert window["before"][certificate] < mtls.now < window["after"][certificate]
    assert window["after"]["ca"] >= window["after"]["identity"]  # the CA outlives what it signs
    assert families["workfleet_tls_reload_failures"].samples[0].value == 0
    done = subprocess.run(
        [binary("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
