"""Traces with real processes: a backend and workers exporting OTLP/HTTP (the standard OTEL_*
variables, nothing else) to a small collector in this test, which decodes the protobuf
ExportTraceServiceRequest as any collector would. One operation = one trace across the backend,
the worker and the worker's executor process; a re-dispatch after SIGKILL joins it; the log
lines of both processes carry its trace id."""

import gzip
import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from workfleet.client import Client
from workfleet.harness.cluster import Cluster, Process, wait_for
from workfleet.protocol import OperationView


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name"))


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


class Collector:
    """POST /v1/traces, as an OpenTelemetry collector's OTLP/HTTP receiver takes it."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        lock = threading.Lock()
        received = self.spans

        class Receiver(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    for batch in request.resource_spans:
                        resource = {a.key: _value(a.value) for a in batch.resource.attributes}
                        for scope in batch.scope_spans:
                            received.extend(
                                Span(
                                    s.name,
                                    s.trace_id.hex(),
                                    s.span_id.hex(),
                                    s.parent_span_id.hex(),
                                    {a.key: _value(a.value) for a in s.attributes},
                                    resource,
                                )
                                for s in scope.spans
                            )
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def trace(self, trace_id: str | None) -> list[Span]:
        return [s for s in list(self.spans) if s.trace_id == trace_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    made = Collector()
    yield made
    made.close()


def _named(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


def _log_lines(process: Process) -> list[dict[str, Any]]:
    lines = []
    for line in process.log().splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def _trace_ids_of(process: Process, operation_id: str, events: set[str]) -> dict[str, Any]:
    """event -> the trace_id of that log line about the operation (None if it has none)."""
    return {
        line["event"]: line.get("trace_id")
        for line in _log_lines(process)
        if line.get("operation_id") == operation_id and line.get("event") in events
    }


async def _until_traced(collector: Collector, op: OperationView, *names: str) -> list[Span]:
    async def arrived() -> list[Span] | None:
        spans = collector.trace(op.trace_id)
        return spans if all(_named(spans, name) for name in names) else None

    found: list[Span] = await wait_for(
        arrived, timeout_s=20, interval_s=0.1, what=f"spans {names} of {op.operation_id}"
    )
    return found


async def _running_on(client: Client, operation_id: str, worker_id: str) -> bool:
    op = await client.get(operation_id)
    return op.status == "running" and op.worker_id == worker_id


async def test_one_operation_is_one_trace_across_backend_worker_and_executor_even_after_a_kill(
    tmp_path: Path, collector: Collector
) -> None:
    otel = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans reach the collector while we wait
    }
    fleet = Cluster(tmp_path / "traced", backend_env=otel)
    await fleet.start_backend()
    try:
        for worker_id in ("victim", "spare"):
            await fleet.start_worker(worker_id, env=otel)
        await fleet.wait_workers("victim", "spare")
        async with fleet.client() as client:
            # A: starts on the victim, which is killed; attempt 2 runs on the spare
            await client.drain("spare")
            lost = await client.submit("diagnostic", {"action": "sleep", "seconds": 3, "steps": 3})
            await wait_for(
                lambda: _running_on(client, lost.operation_id, "victim"), what="A on the victim"
            )
            await client.drain("spare", undo=True)
            fleet.workers["victim"].signal(signal.SIGKILL)
            rerun = await client.wait(lost.operation_id, timeout_s=60)
            # B: an ordinary run, start to end
            plain = await client.submit("diagnostic", {"action": "sleep", "seconds": 0.2})
            done = await client.wait(plain.operation_id, timeout_s=30)
        assert (rerun.status, rerun.worker_id, rerun.attempt) == ("completed", "spare", 2)
        assert (done.status, done.worker_id) == ("completed", "spare")
        assert rerun.trace_id is not None and done.trace_id is not None
        assert rerun.trace_id != done.trace_id

        spans = await _until_traced(collector, done, "submit", "dispatch", "execute", "run")
        spans = await _until_traced(collector, done, "complete")
        services = {(s.service, s.name) for s in spans}
        assert {
            ("workfleet-backend", "POST /api/v1/operations"),  # the client's submit
            ("workfleet-backend", "submit"),
            ("workfleet-backend", "dispatch"),
            ("workfleet-worker", "POST /api/v1/operations"),  # the dispatch, received
            ("workfleet-worker", "execute"),
            ("workfleet-worker", "run"),
            ("workfleet-backend", "POST /api/v1/workers/{worker_id}/reports"),
            ("workfleet-backend", "complete"),
        } <= services
        (submit,) = _named(spans, "submit")
        (dispatch,) = _named(spans, "dispatch")
        (execute,) = _named(spans, "execute")
        (run,) = _named(spans, "run")
        assert dispatch.parent_id == submit.span_id
        assert run.parent_id == execute.span_id
        assert execute.resource["service.instance.id"] == "spare"
        # `run` comes from the operation's own process, exporting by itself
        assert run.resource["service.instance.id"] == "spare"
        assert run.resource["process.pid"] != execute.resource["process.pid"]
        assert (run.attributes["workfleet.operation_id"], run.attributes["workfleet.outcome"]) == (
            done.operation_id,
            "completed",
        )

        # A: both attempts and the loss in one trace, hanging off the stored submit span
        spans = await _until_traced(collector, rerun, "attempt_lost", "execute", "run", "complete")
        (submit,) = _named(spans, "submit")
        attempts = {
            (s.attributes["workfleet.attempt"], s.attributes["workfleet.worker_id"])
            for s in _named(spans, "dispatch")
        }
        assert attempts == {(1, "victim"), (2, "spare")}
        assert all(s.parent_id == submit.span_id for s in _named(spans, "dispatch"))
        (executed,) = _named(spans, "execute")  # the victim's died with it, unexported
        assert (
            executed.resource["service.instance.id"],
            executed.attributes["workfleet.attempt"],
        ) == (
            "spare",
            2,
        )

        # the log lines of both processes about each operation carry its trace id
        assert fleet.backend is not None
        backend_events = {"operation_submitted", "operation_finished", "operation_attempt_lost"}
        assert _trace_ids_of(fleet.backend, done.operation_id, backend_events) == {
            "operation_submitted": done.trace_id,
            "operation_finished": done.trace_id,
        }
        assert _trace_ids_of(fleet.backend, rerun.operation_id, backend_events) == {
            "operation_submitted": rerun.trace_id,
            "operation_attempt_lost": rerun.trace_id,
            "operation_finished": rerun.trace_id,
        }
        spare = fleet.workers["spare"]
        assert _trace_ids_of(spare, done.operation_id, {"operation_accepted"}) == {
            "operation_accepted": done.trace_id
        }
        assert _trace_ids_of(spare, rerun.operation_id, {"operation_accepted"}) == {
            "operation_accepted": rerun.trace_id
        }
    finally:
        await fleet.stop()
