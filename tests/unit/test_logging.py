"""The JSON log pipeline in-process: one object per line with the ids bound and the current
span's trace ids, standard-library records (uvicorn) through the same processors, and the access
line of the HTTP middleware (route template, status, ids; never the query string)."""

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.trace import TracerProvider

from workfleet.observability.http import HttpObservability
from workfleet.observability.logging import configure_logging

tracer = TracerProvider().get_tracer("test")  # spans made current; nothing exported


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(json=True, level="INFO", fields={"service": "test"}, stream=stream)
    structlog.configure(cache_logger_on_first_use=False)  # module loggers must not keep `stream`
    try:
        yield stream
    finally:
        logging.captureWarnings(False)
        root = logging.getLogger()
        for handler in root.handlers[:]:
            if type(handler).__module__ == "workfleet.observability.logging":
                root.removeHandler(handler)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def test_every_line_is_one_json_object_with_the_ids_bound_and_the_trace_ids(
    log_lines: io.StringIO,
) -> None:
    log = structlog.get_logger("test")
    structlog.contextvars.bind_contextvars(operation_id="op_1", attempt=2)
    log.info("outside_a_span")
    with tracer.start_as_current_span("run") as span:
        log.warning("inside_a_span", detail="multi\nline")
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it_failed")
    context = span.get_span_context()
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "outside_a_span",
        "inside_a_span",
        "Started server process [42]",
        "it_failed",
    ]
    for line in lines:
        assert (line["service"], line["operation_id"], line["attempt"]) == ("test", "op_1", 2)
        assert line["level"] and line["timestamp"].endswith("Z")
    assert "trace_id" not in lines[0]
    for line in lines[1:]:
        assert line["trace_id"] == f"{context.trace_id:032x}"
        assert line["span_id"] == f"{context.span_id:016x}"
    assert lines[2]["logger"] == "uvicorn.error"
    assert lines[3]["exception"][0]["exc_type"] == "ValueError"


def access_app() -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/api/v1")

    @router.get("/operations/{operation_id}")
    async def get_operation(operation_id: str) -> dict[str, str]:
        return {"operation_id": operation_id}

    app.include_router(router)
    app.add_middleware(HttpObservability)
    return app


async def test_the_access_line_names_the_route_status_and_ids_but_no_query(
    log_lines: io.StringIO,
) -> None:
    transport = httpx.ASGITransport(app=access_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        await http.get("/api/v1/operations/op_7?api_key=s3cr3t-in-a-query")
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    access = [line for line in lines if line["event"] == "http_request"]
    assert len(access) == 1
    assert access[0]["method"] == "GET"
    assert access[0]["route"] == "/api/v1/operations/{operation_id}"
    assert access[0]["status"] == 200
    assert access[0]["operation_id"] == "op_7"
    assert access[0]["duration_s"] >= 0
    assert "s3cr3t" not in log_lines.getvalue()
