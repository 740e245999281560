"""Traces (observability/tracing.py): one trace per operation, off unless OTEL_* says so.

In process, no sockets: an in-memory exporter behind the orchestrator, the real Dispatcher
and an in-memory fleet (the rig of test_orchestrator.py). Tracing is switched on per test
with tracing.enable(), never by setting the process-wide provider, which can be set only once.
The production set-up (configure() from the environment) runs in a fresh interpreter."""

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_orchestrator import NOOP, FakeClock, FakeFleet

from workfleet.backend.app import create_app
from workfleet.backend.dispatcher import Dispatcher
from workfleet.backend.orchestrator import Orchestrator, OrchestratorConfig, Registration
from workfleet.domain.workers import Capabilities
from workfleet.observability import tracing
from workfleet.observability.correlation import add_trace_ids
from workfleet.observability.metrics import BackendMetrics
from workfleet.operations.registry import load_operation_types
from workfleet.settings import BackendSettings, ConfigurationError
from workfleet.store.memory import MemoryStore

OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


@pytest.fixture
async def fleet() -> AsyncIterator[tuple[Orchestrator, FakeFleet, MemoryStore]]:
    """An orchestrator with its real Dispatcher running, over an in-memory fleet of two."""
    store, workers, clock = MemoryStore(), FakeFleet(), FakeClock()
    orch = Orchestrator(
        store,
        workers,
        operation_types=load_operation_types(),
        config=OrchestratorConfig(),
        metrics=BackendMetrics(),
        clock=clock,
        monotonic=clock.mono,
    )
    dispatching = asyncio.create_task(Dispatcher(orch, workers).run())
    for worker_id in ("w1", "w2"):
        await orch.register(
            Registration(
                worker_id=worker_id,
                worker_type="cpu",
                endpoint_url=f"http://{worker_id}.invalid:5003",
                capabilities=Capabilities(slots=1),
                operation_types=frozenset({"diagnostic"}),
                instance_id="inst-1",
                accepted_seq=0,
            )
        )
    try:
        yield orch, workers, store
    finally:
        dispatching.cancel()
        await asyncio.gather(dispatching, return_exceptions=True)
        await orch.stop()


async def until(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("the dispatcher did not get there")


def named(exported: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in exported if s.name == name]


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


async def test_one_operation_is_one_trace_from_submit_through_a_redispatch_to_completion(
    spans: InMemorySpanExporter, fleet: tuple[Orchestrator, FakeFleet, MemoryStore]
) -> None:
    """submit > dispatch (attempt 1, w1) ... w1 lost > attempt_lost, dispatch (attempt 2, w2)
    > complete: all in the trace whose traceparent the operation keeps; each dispatch request
    carries it to the worker; the orchestrator's log lines for it carry its trace id."""
    orch, workers, store = fleet
    with structlog.testing.capture_logs(processors=[add_trace_ids]) as logs:
        op, _ = await orch.submit(NOOP, owner="alice")
        await until(lambda: len(workers.dispatches) == 1 and orch.active[op.operation_id].lease)
        first = workers.dispatches[0][0]
        await until(lambda: orch.active[op.operation_id].status == "running")
        for _ in range(3):  # three failed health checks: its worker is lost
            orch.apply_health(first, None)
        await until(lambda: len(workers.dispatches) == 2)
        await until(lambda: orch.active[op.operation_id].status == "running")
        running = orch.active[op.operation_id]
        assert running.lease is not None
        await orch.report_completion(op.operation_id, running.lease, "completed", result={})

    stored = await store.get_operation(op.operation_id)
    assert stored is not None and stored.status == "completed" and stored.attempt == 2
    assert op.traceparent is not None and stored.traceparent == op.traceparent
    assert op.trace_id == stored.trace_id == tracing.trace_id_of(op.traceparent)

    exported = spans.get_finished_spans()
    (submit,) = named(exported, "submit")
    dispatches = named(exported, "dispatch")
    (lost,) = named(exported, "attempt_lost")
    (complete,) = named(exported, "complete")
    assert {hex_trace(s) for s in exported} == {op.trace_id}
    assert submit.attributes is not None
    assert submit.attributes["workfleet.operation_id"] == op.operation_id
    # both attempts hang off the span the operation stored, whatever happened in between
    assert submit.context is not None
    assert all(
        s.parent is not None and s.parent.span_id == submit.context.span_id
        for s in (*dispatches, lost, complete)
    )
    assert sorted((s.attributes or {}).get("workfleet.attempt", 0) for s in dispatches) == [1, 2]
    assert {(s.attributes or {}).get("workfleet.worker_id") for s in dispatches} == {"w1", "w2"}
    assert all((s.attributes or {}).get("workfleet.result") == "accepted" for s in dispatches)
    assert (complete.attributes or {}).get("workfleet.outcome") == "completed"

    # each dispatch request carries its own dispatch span's context to the worker (sampled)
    sent = {request.traceparent for _, request in workers.dispatches}
    assert all(tp is not None and int(tp[-2:], 16) & 1 for tp in sent)
    assert {tp[:-3] for tp in sent if tp is not None} == {
        f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}" for s in dispatches if s.context
    }

    by_event = {entry["event"]: entry for entry in logs if "operation_id" in entry}
    for event in ("operation_submitted", "operation_attempt_lost", "operation_finished"):
        assert by_event[event].get("trace_id") == op.trace_id, event


async def test_operations_submitted_with_tracing_off_have_no_trace(
    fleet: tuple[Orchestrator, FakeFleet, MemoryStore],
) -> None:
    orch, workers, _ = fleet
    op, _ = await orch.submit(NOOP, owner="alice")
    await until(lambda: len(workers.dispatches) == 1)
    assert (op.traceparent, op.trace_id, workers.dispatches[0][1].traceparent) == (None,) * 3


async def test_a_client_traceparent_makes_the_operation_part_of_the_callers_trace(
    spans: InMemorySpanExporter, fleet: tuple[Orchestrator, FakeFleet, MemoryStore]
) -> None:
    orch, _, _ = fleet
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.span("POST /api/v1/operations", parent=caller):
        op, _ = await orch.submit(NOOP, owner="alice")
    assert op.trace_id == "0af7651916cd43dd8448eb211c80319c"


async def test_periodic_progress_is_sent_unsampled_in_the_operations_trace(
    spans: InMemorySpanExporter,
) -> None:
    """What a worker's progress-only report carries: the attempt's trace id with the sampled
    flag off, so the backend's server span records nothing."""
    execute = tracing.start("execute")
    with tracing.unsampled(execute):
        carried = tracing.current_traceparent()
    tracing.end(execute)
    assert carried is not None and carried.endswith("-00")
    assert tracing.trace_id_of(carried) == hex_trace(spans.get_finished_spans()[0])


# ---- switched on by the environment, and only by it ---------------------------------------------


@pytest.fixture
def no_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_otel")
@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_the_standard_variables_decide_whether_traces_are_exported(
    environ: dict[str, str], wanted: list[str]
) -> None:
    assert tracing.exporters_wanted(environ) == wanted


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "jaeger"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_an_exporter_we_cannot_serve_is_a_configuration_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match=r"OTEL|OTLP"):
        tracing.exporters_wanted(environ)


@pytest.mark.usefixtures("no_otel")
def test_with_tracing_off_nothing_is_set_up(tmp_path: Path) -> None:
    """No provider, no exporter thread, no instrumentation of the app or of its HTTP client."""
    assert tracing.configure("workfleet-backend") is False
    assert not tracing.enabled()
    settings = BackendSettings(data_dir=tmp_path, auth_mode="token", cluster_token="s" * 40)
    app = create_app(settings, store=MemoryStore())
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    gateway = app.state.orchestrator.gateway
    worker_pool = gateway._new_client()
    assert not getattr(worker_pool, "_is_instrumented_by_opentelemetry", False)
    asyncio.run(worker_pool.aclose())
    assert not [t for t in threading.enumerate() if t.name.startswith("OtelBatch")]
    assert tracing.child_setup() is None and tracing.preload_modules() == []


SET_UP = """
import sys, threading
from pathlib import Path
from workfleet.backend.app import create_app
from workfleet.observability import tracing
from workfleet.settings import BackendSettings
from workfleet.store.memory import MemoryStore
from workfleet.worker.app import create_worker_app
from workfleet.settings import WorkerSettings

on = tracing.configure("workfleet-backend")
data = Path(sys.argv[1])
backend = create_app(
    BackendSettings(data_dir=data, auth_mode="token", cluster_token="s" * 40), store=MemoryStore()
)
worker = create_worker_app(
    WorkerSettings(data_dir=data, worker_id="w1", auth_mode="token", cluster_token="s" * 40)
)
with tracing.span("probe"):
    pass
tracing.flush()
facts = {
    "on": on,
    "sdk_loaded": "opentelemetry.sdk.trace" in sys.modules,
    "instrumented": [
        getattr(app, "_is_instrumented_by_opentelemetry", False) for app in (backend, worker)
    ],
    "exporter_threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("Otel")),
}
print("FACTS " + __import__("json").dumps(facts), flush=True)
"""


def _set_up_in_a_fresh_process(tmp_path: Path, **otel: str) -> tuple[dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", SET_UP, str(tmp_path)],
        env={**env, **otel},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    facts = next(line for line in done.stdout.splitlines() if line.startswith("FACTS "))
    return json.loads(facts.removeprefix("FACTS ")), done.stdout


def test_off_by_default_the_sdk_is_not_even_imported(tmp_path: Path) -> None:
    facts, _ = _set_up_in_a_fresh_process(tmp_path)
    assert facts == {
        "on": False,
        "sdk_loaded": False,
        "instrumented": [False, False],
        "exporter_threads": [],
    }


def test_otel_traces_exporter_turns_it_on_with_spans_in_json_lines(tmp_path: Path) -> None:
    facts, stdout = _set_up_in_a_fresh_process(
        tmp_path, OTEL_TRACES_EXPORTER="console", OTEL_RESOURCE_ATTRIBUTES="deployment=test"
    )
    assert facts["on"] and facts["sdk_loaded"] and facts["instrumented"] == [True, True]
    assert facts["exporter_threads"] == ["OtelBatchSpanRecordProcessor"]
    (probe,) = [json.loads(line) for line in stdout.splitlines() if '"name": "probe"' in line]
    resource = probe["resource"]["attributes"]
    assert (resource["service.name"], resource["deployment"]) == ("workfleet-backend", "test")
