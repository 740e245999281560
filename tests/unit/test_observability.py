"""Metrics and service discovery in-process: the HTTP middleware (route templates, bounded
labels), the scrape-time gauges (every state at zero, a removed worker's series gone),
certificate validity, the OpenMetrics exposition with trace exemplars, and the service
discovery list."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from workfleet.backend.app import create_app
from workfleet.backend.orchestrator import Registration
from workfleet.domain.operations import Operation
from workfleet.domain.workers import WORKER_STATUSES, Capabilities, Worker
from workfleet.observability.discovery import prometheus_targets
from workfleet.observability.http import HttpObservability
from workfleet.observability.metrics import (
    CALLBACKS,
    BackendMetrics,
    WorkerMetrics,
    error_type,
    exposition,
)
from workfleet.security.identity import Identity
from workfleet.security.pki import init_ca, issue_certificate, write_credentials
from workfleet.settings import BackendSettings, TlsPaths
from workfleet.store.memory import MemoryStore

SECRET = "observability-cluster-secret-0123456789abcd"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
tracer = TracerProvider().get_tracer("test")  # spans made current; nothing exported


def worker(worker_id: str = "w1", worker_type: str = "backtesting", **changes: Any) -> Worker:
    base = Worker(
        worker_id=worker_id,
        worker_type=worker_type,
        endpoint_url=f"http://10.0.0.5:5003/{worker_id}",
        capabilities=Capabilities(slots=2),
        operation_types=frozenset({"diagnostic"}),
        registered_at=T0,
        last_healthy_at=T0 + timedelta(seconds=30),
    )
    return replace(base, **changes)


def samples(registry_text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(registry_text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(metrics: BackendMetrics | WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# ---- the HTTP middleware ------------------------------------------------------------------------


@pytest.fixture
def observed() -> tuple[FastAPI, BackendMetrics]:
    metrics = BackendMetrics()
    app = FastAPI()
    router = APIRouter(prefix="/api/v1")

    @router.get("/operations/{operation_id}")
    async def get_operation(operation_id: str) -> dict[str, str]:
        return {"operation_id": operation_id}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the handler failed")

    app.include_router(router)
    app.add_middleware(HttpObservability, observe=metrics.http_request)
    return app, metrics


def client_of(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_requests_are_counted_by_route_template_never_by_raw_path(
    observed: tuple[FastAPI, BackendMetrics],
) -> None:
    app, metrics = observed
    async with client_of(app) as http:
        for operation_id in ("op_1", "op_2", "op_3?token=leaked"):
            assert (await http.get(f"/api/v1/operations/{operation_id}")).status_code == 200
        assert (await http.get("/api/v1/random/path/abc123")).status_code == 404
        assert (await http.post("/api/v1/operations/op_1")).status_code == 405
        assert (await http.get("/api/v1/boom")).status_code == 500
        assert (await http.request("BREW", "/api/v1/operations/op_1")).status_code == 405
    template = "/api/v1/operations/{operation_id}"
    text = metrics.render().decode()
    assert "op_1" not in text and "leaked" not in text and "abc123" not in text
    counted = {
        (labels["method"], labels["route"], labels["code"]): sample_value
        for (name, label_set), sample_value in samples(text).items()
        if name == "workfleet_http_requests_total"
        for labels in [dict(label_set)]
    }
    assert counted == {
        ("GET", template, "200"): 3,
        ("GET", "unmatched", "404"): 1,
        ("POST", template, "405"): 1,
        ("GET", "/api/v1/boom", "500"): 1,
        ("other", template, "405"): 1,
    }
    assert value(metrics, "workfleet_http_request_duration_seconds_count", route=template) == 5


# ---- scrape-time gauges -------------------------------------------------------------------------


def test_every_worker_has_every_state_at_zero_but_its_own() -> None:
    metrics = BackendMetrics()
    workers = {
        "w1": worker("w1"),
        "w2": worker("w2", "training", unavailable_since=T0, consecutive_failures=3),
    }
    metrics.watch_workers(lambda: list(workers.values()))
    for _ in range(2):  # a second scrape: no double registration, same answer
        states = {
            (worker_id, state): value(
                metrics,
                "workfleet_registry_worker_state",
                worker_id=worker_id,
                worker_type=workers[worker_id].worker_type,
                state=state,
            )
            for worker_id in workers
            for state in WORKER_STATUSES
        }
        assert states == {
            (worker_id, state): (1.0 if state == workers[worker_id].status else 0.0)
            for worker_id in workers
            for state in WORKER_STATUSES
        }
    assert workers["w2"].status == "temporarily_unavailable"
    seen = value(
        metrics,
        "workfleet_worker_last_seen_timestamp_seconds",
        worker_id="w1",
        worker_type="backtesting",
    )
    assert seen == (T0 + timedelta(seconds=30)).timestamp()
    assert value(metrics, "workfleet_workers", worker_type="training", state="busy") == 0
    assert value(metrics, "workfleet_registry_collect_duration_seconds") is not None


def test_a_removed_worker_has_no_series_from_the_next_scrape_on() -> None:
    metrics = BackendMetrics()
    workers = {"w1": worker("w1"), "w2": worker("w2")}
    metrics.watch_workers(lambda: list(workers.values()))
    assert "w2" in metrics.render().decode()
    del workers["w2"]
    text = metrics.render().decode()
    assert 'worker_id="w2"' not in text
    assert 'worker_id="w1"' in text


def test_pending_and_running_are_counted_by_type_with_zeros_for_every_known_type() -> None:
    metrics = BackendMetrics()
    metrics.known_types(["diagnostic", "backtesting", "training"], ["backtesting", "training"])

    def op(operation_id: str, status: str, kind: str = "diagnostic") -> Operation:
        return Operation(operation_id, kind, {}, "alice", T0, status=status)  # type: ignore[arg-type]

    active = [op("a", "pending"), op("b", "pending"), op("c", "running"), op("d", "running", "x")]
    metrics.watch_operations(lambda: active)
    assert value(metrics, "workfleet_operations_pending", operation_type="diagnostic") == 2
    assert value(metrics, "workfleet_operations_pending", operation_type="training") == 0
    assert value(metrics, "workfleet_operations_running", operation_type="diagnostic") == 1
    assert value(metrics, "workfleet_operations_running", operation_type="x") == 1
    assert value(metrics, "workfleet_operations_running", operation_type="backtesting") == 0


def test_known_types_show_every_reason_and_result_at_zero() -> None:
    metrics = BackendMetrics()
    metrics.known_types(["diagnostic"], ["training"])
    for reason in ("refused", "unreachable", "unconfirmed"):
        labels = {"operation_type": "diagnostic", "reason": reason}
        assert value(metrics, "workfleet_operation_dispatch_failures_total", **labels) == 0
    for result in ("success", "failure"):
        labels = {"worker_type": "training", "result": result}
        assert value(metrics, "workfleet_worker_health_checks_total", **labels) == 0
    for reason in ("deregistered", "removed"):
        labels = {"worker_type": "training", "reason": reason}
        assert value(metrics, "workfleet_worker_deregistrations_total", **labels) == 0
    assert value(metrics, "workfleet_worker_registrations_total", worker_type="training") == 0


def test_an_operation_is_timed_from_submit_to_its_end_with_its_trace_as_exemplar() -> None:
    metrics = BackendMetrics()
    op = Operation(
        "op_1",
        "diagnostic",
        {},
        "alice",
        T0,
        status="failed",
        finished_at=T0 + timedelta(hours=2),
        trace_id="ab" * 16,
    )
    metrics.finished(op)
    labels = {"operation_type": "diagnostic", "status": "failed"}
    assert value(metrics, "workfleet_operations_completed_total", **labels) == 1
    assert value(metrics, "workfleet_operation_duration_seconds_sum", **labels) == 7200
    assert value(metrics, "workfleet_operation_duration_seconds_bucket", le="3600.0", **labels) == 0
    openmetrics, content_type = exposition(metrics.registry, "application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    assert f'# {{trace_id="{"ab" * 16}"}} 7200.0' in openmetrics.decode()


def test_worker_metrics_follow_an_operation_and_bound_error_types() -> None:
    metrics = WorkerMetrics(
        lambda: "busy", lambda: 0.5, lambda: 0.25, operation_types=["diagnostic"], slots=3
    )
    assert value(metrics, "workfleet_worker_max_concurrent_operations") == 3
    assert (
        value(metrics, "workfleet_worker_operations_in_progress", operation_type="diagnostic") == 0
    )
    for callback in CALLBACKS:
        assert value(metrics, "workfleet_worker_callback_failures_total", callback=callback) == 0
    metrics.started("diagnostic")
    assert (
        value(metrics, "workfleet_worker_operations_in_progress", operation_type="diagnostic") == 1
    )
    started = value(
        metrics,
        "workfleet_worker_operation_last_progress_timestamp_seconds",
        operation_type="diagnostic",
    )
    assert started is not None and started > T0.timestamp()
    with tracer.start_as_current_span("execute") as span:
        error = {"type": "exception", "message": "ValueError: bad"}
        metrics.finished("diagnostic", "failed", 2.0, error)
        trace_id = f"{span.get_span_context().trace_id:032x}"
    assert (
        value(metrics, "workfleet_worker_operations_in_progress", operation_type="diagnostic") == 0
    )
    errors = {"operation_type": "diagnostic", "error_type": "ValueError"}
    assert value(metrics, "workfleet_worker_operation_errors_total", **errors) == 1
    assert trace_id in exposition(metrics.registry, "application/openmetrics-text")[0].decode()
    metrics.callback_failed("report")
    assert value(metrics, "workfleet_worker_callback_failures_total", callback="report") == 1
    assert value(metrics, "process_resident_memory_bytes") is not None  # Linux: /proc
    assert value(metrics, "workfleet_worker_state", state="busy") == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            {"type": "exception", "message": "ZeroDivisionError: division by zero"},
            "ZeroDivisionError",
        ),
        ({"type": "exception", "message": "DataError: no bars for AAPL"}, "DataError"),
        ({"type": "exception", "message": "MyPrivateThing: user@example.com"}, "other"),
        ({"type": "exception", "message": "no colon at all"}, "other"),
        ({"type": "crashed", "message": "killed by SIGKILL"}, "crashed"),
        ({"type": "whatever-a-worker-says", "message": ""}, "other"),
        (None, "unknown"),
    ],
)
def test_error_types_come_from_an_allow_list(error: dict[str, str] | None, expected: str) -> None:
    assert error_type(error) == expected


def test_certificate_validity_is_read_from_the_files(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    issued = issue_certificate(ca, Identity("backend"), lifetime=timedelta(days=10), now=T0)
    cert, key, bundle = write_credentials(
        tmp_path / "issued", Identity("backend"), issued, ca.bundle_pem()
    )
    metrics = BackendMetrics()
    metrics.watch_certificates(TlsPaths(cert, key, bundle))
    name = "workfleet_tls_certificate_not_{}_timestamp_seconds"
    own = x509.load_pem_x509_certificate(cert.read_bytes())
    before = value(metrics, name.format("before"), certificate="identity")
    after = value(metrics, name.format("after"), certificate="identity")
    assert before == own.not_valid_before_utc.timestamp()
    assert after == own.not_valid_after_utc.timestamp()
    assert own.not_valid_after_utc - own.not_valid_before_utc >= timedelta(days=10)
    ca_after = value(metrics, name.format("after"), certificate="ca")
    assert ca_after is not None and ca_after > after
    assert value(metrics, "workfleet_tls_reload_failures_total") == 0
    cert.write_text("not a certificate")  # a broken file: no series, no error
    assert value(metrics, name.format("after"), certificate="identity") is None


# ---- service discovery --------------------------------------------------------------------------


def test_service_discovery_lists_each_worker_with_its_labels() -> None:
    workers = [
        worker("w2", "training", endpoint_url="https://gpu-1.example:5002"),
        worker("w1", endpoint_url="http://10.0.0.5:5003/"),
        worker("w3", endpoint_url="http://[fd00::1]/prefix"),
    ]
    assert prometheus_targets(workers) == [
        {
            "targets": ["10.0.0.5:5003"],
            "labels": {
                "worker_id": "w1",
                "worker_type": "backtesting",
                "__scheme__": "http",
                "__metrics_path__": "/metrics",
            },
        },
        {
            "targets": ["gpu-1.example:5002"],
            "labels": {
                "worker_id": "w2",
                "worker_type": "training",
                "__scheme__": "https",
                "__metrics_path__": "/metrics",
            },
        },
        {
            "targets": ["[fd00::1]:80"],
            "labels": {
                "worker_id": "w3",
                "worker_type": "backtesting",
                "__scheme__": "http",
                "__metrics_path__": "/prefix/metrics",
            },
        },
    ]


async def test_the_backend_serves_service_discovery_and_openmetrics_to_scrapers(
    tmp_path: Path,
) -> None:
    settings = BackendSettings(data_dir=tmp_path, auth_mode="token", cluster_token=SECRET)
    app = create_app(settings, store=MemoryStore())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        await app.state.orchestrator.register(
            Registration(
                worker_id="w1",
                worker_type="backtesting",
                endpoint_url="http://127.0.0.1:5003",
                capabilities=Capabilities(),
                operation_types=frozenset({"diagnostic"}),
                instance_id="i1",
                accepted_seq=0,
                running=(),
            )
        )
        auth = {"Authorization": f"Bearer {SECRET}"}
        assert (await http.get("/api/v1/prometheus/targets")).status_code == 401
        targets = (await http.get("/api/v1/prometheus/targets", headers=auth)).json()
        scraped = await http.get(
            "/metrics", headers={**auth, "Accept": "application/openmetrics-text;version=1.0.0"}
        )
        plain = await http.get("/metrics", headers=auth)
    assert targets[0]["targets"] == ["127.0.0.1:5003"]
    assert targets[0]["labels"]["worker_id"] == "w1"
    assert scraped.headers["content-type"].startswith("application/openmetrics-text")
    assert scraped.text.endswith("# EOF\n")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    registered = 'workfleet_worker_registrations_total{worker_type="backtesting"} 1.0'
    assert registered in plain.text
    assert 'route="/api/v1/prometheus/targets"' in plain.text
