"""OpenTelemetry traces: one trace per operation, off unless the standard OTEL_* variables turn
it on.

On when OTEL_TRACES_EXPORTER names an exporter (`otlp`, `console`, or both, comma-separated) or
an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), unless
OTEL_SDK_DISABLED=true. The other standard variables apply as the SDK reads them:
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*,
OTEL_EXPORTER_OTLP_* (OTLP over HTTP/protobuf only).

Off (the default) the SDK is never imported: no provider, no exporter thread, no
instrumentation, and every helper below returns after testing one module global.

An operation's trace: the client's POST (FastAPI server span) > `submit`, whose `traceparent`
the backend stores on the operation; from it, for every attempt, `dispatch` > the httpx POST >
the worker's server span > `execute` (worker process, accept to end) > `run` (the executor
process, around the operation function); the worker's result POST > the backend's server span >
`complete`. A lost attempt leaves an `attempt_lost` span; the next attempt's `dispatch` joins
the same trace through the stored traceparent, so does everything after a backend restart.
"""

import contextlib
import os
import random
import re
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from workfleet.settings import ConfigurationError

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider

Span = trace.Span
Attributes = Mapping[str, str | int | float | bool]
EXPORTERS = ("otlp", "console")
# Requests nobody wants a trace of: probes, scrapes, the worker's held-open session, the UI.
UNTRACED_URLS = "/health$,/livez$,/metrics$,/session$,/ui,/api/v1/prometheus/"
PRELOAD = [  # what an executor needs to trace, imported once by the forkserver
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
]

_NULL: AbstractContextManager[None] = contextlib.nullcontext()
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_tracer: trace.Tracer | None = None
_provider: "TracerProvider | None" = None
_setup: dict[str, str] | None = None  # how an executor process of this worker sets itself up
_flusher: threading.Thread | None = None
_flush_wanted = threading.Event()


# ---- set-up -------------------------------------------------------------------------------------


def exporters_wanted(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The exporters the environment asks for; [] means tracing stays off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not raw:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    names = [name.strip() for name in raw.split(",") if name.strip() not in ("", "none")]
    unknown = sorted(set(names) - set(EXPORTERS))
    if unknown:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={raw!r}: {', '.join(unknown)} not supported here; "
            f"use {' or '.join(EXPORTERS)} (or none)"
        )
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if "otlp" in names and protocol != "http/protobuf":
        raise ConfigurationError(
            f"OTLP protocol {protocol!r}: only http/protobuf is supported (port 4318 of a "
            "collector)"
        )
    return names


def configure(service: str, *, instance_id: str | None = None) -> bool:
    """Turn tracing on for this process if the environment asks for it (once; later calls
    return the first answer). `service`: the default service.name (OTEL_SERVICE_NAME wins);
    `instance_id`: service.instance.id (a worker's id). Returns whether tracing is on."""
    global _setup
    if _provider is not None:
        return True
    names = exporters_wanted()
    if not names:
        return False
    # the stable HTTP attribute names (http.request.method, url.path...), unless told otherwise
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    setup = {"service": service, "exporters": ",".join(names)}
    if instance_id is not None:
        setup["instance_id"] = instance_id
    provider = _make_provider(setup)
    trace.set_tracer_provider(provider)  # for code that uses the OpenTelemetry API directly
    enable(provider)
    _setup = setup
    return True


def configure_child(setup: Mapping[str, str] | None) -> None:
    """In an executor process: trace as the worker that started it does (child_setup());
    None: it does not."""
    if setup is not None and _provider is None:
        provider = _make_provider(setup)
        trace.set_tracer_provider(provider)  # operation code may make spans of its own
        enable(provider)


def child_setup() -> dict[str, str] | None:
    """What an executor process needs to trace (None when tracing is off here)."""
    return dict(_setup) if _setup is not None else None


def preload_modules() -> list[str]:
    return list(PRELOAD) if _setup is not None else []


def _make_provider(setup: Mapping[str, str]) -> "TracerProvider":
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    defaults: dict[str, Any] = {"service.name": setup["service"], "process.pid": os.getpid()}
    if "instance_id" in setup:
        defaults["service.instance.id"] = setup["instance_id"]
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over our defaults
    resource = Resource.create({**defaults, **OTELResourceDetector().detect().attributes})
    provider = TracerProvider(resource=resource)
    for name in setup["exporters"].split(","):
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:  # one JSON object per line, as our logs are
            exporter = ConsoleSpanExporter(
                formatter=lambda span: span.to_json(indent=None) + os.linesep
            )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def enable(provider: "TracerProvider") -> None:
    """Trace through `provider` (configure() calls this; tests pass an in-memory one)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("workfleet")


def disable() -> None:
    """Back to off (tests); the global provider, if one was set, stays."""
    global _tracer, _provider, _setup
    _tracer = _provider = _setup = None


def enabled() -> bool:
    return _tracer is not None


def flush(timeout_s: float = 5.0) -> None:
    """Export what has ended, now, and wait for it."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def flush_soon() -> None:
    """Export what has ended now, without waiting for it (an executor after each operation:
    it may be killed at any time, and its next operation must not wait for an export)."""
    global _flusher
    if _provider is None:
        return
    if _flusher is None:
        _flusher = threading.Thread(target=_flush_when_asked, name="workfleet-flush", daemon=True)
        _flusher.start()
    _flush_wanted.set()


def _flush_when_asked() -> None:
    while True:
        _flush_wanted.wait()
        _flush_wanted.clear()
        flush()


def instrument_app(app: "FastAPI") -> None:
    """Server spans for every request but probes, scrapes, sessions and the UI (and none of
    the ASGI receive/send spans under them: two more per request, telling nothing)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=UNTRACED_URLS,
        tracer_provider=_provider,
        exclude_spans=["receive", "send"],
    )


def instrument_client(client: "httpx.AsyncClient") -> None:
    """Client spans and the `traceparent` header on this client's requests."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=_provider)


# ---- spans --------------------------------------------------------------------------------------


def span(
    name: str, *, parent: str | None = None, attributes: Attributes | None = None
) -> AbstractContextManager[Span | None]:
    """A span, current while the block runs: a child of the current span, or of `parent` (a
    traceparent) when the current span is not in that trace. Attribute names get the
    `workfleet.` prefix."""
    if _tracer is None:
        return _NULL
    return _tracer.start_as_current_span(
        name, context=_parent(parent), attributes=_prefixed(attributes)
    )


def joined(
    name: str, traceparent: str | None, attributes: Attributes | None = None
) -> AbstractContextManager[Span | None]:
    """span() in an operation's trace; nothing at all for an operation without one."""
    if _tracer is None or traceparent is None:
        return _NULL
    return span(name, parent=traceparent, attributes=attributes)


def start(
    name: str, *, parent: str | None = None, attributes: Attributes | None = None
) -> Span | None:
    """A span that outlives the block that starts it (end it with end()); not made current."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, context=_parent(parent), attributes=_prefixed(attributes))


def end(span: Span | None, *, error: str | None = None, **attributes: str | int | bool) -> None:
    if span is None:
        return
    span.set_attributes(_prefixed(attributes) or {})
    if error is not None:
        span.set_status(trace.StatusCode.ERROR, error)
    span.end()


def set_error(span: Span | None, message: str | None) -> None:
    """Mark `span` failed, with `message` (None: it did not fail)."""
    if span is not None and message is not None:
        span.set_status(trace.StatusCode.ERROR, message)


def activate(span: Span | None) -> AbstractContextManager[Any]:
    """Make `span` current for a block (logs then carry its ids, HTTP calls its context)."""
    if span is None or _tracer is None:
        return _NULL
    return trace.use_span(span, end_on_exit=False)


def linked(name: str, spans: Sequence[Span | None]) -> AbstractContextManager[Any]:
    """A new trace for work done for several operations at once (a batch), linked to each."""
    if _tracer is None:
        return _NULL
    links = [trace.Link(s.get_span_context()) for s in spans if s is not None][:64]
    root = trace.set_span_in_context(trace.INVALID_SPAN)
    return _tracer.start_as_current_span(name, context=root, links=links)


def quiet() -> AbstractContextManager[Any]:
    """No client span and no traceparent for the HTTP calls in this block (health checks)."""
    if _tracer is None:
        return _NULL
    from opentelemetry.instrumentation.utils import suppress_http_instrumentation

    return suppress_http_instrumentation()


def unsampled(span: Span | None = None) -> AbstractContextManager[Any]:
    """Calls in this block carry a traceparent that says "not sampled", so the instrumented
    server on the other side records nothing either (periodic progress reports); in the trace
    of `span` if given (log lines there still carry its trace id), else in a random one."""
    if _tracer is None:
        return _NULL
    of = span.get_span_context() if span is not None else None
    context = trace.SpanContext(
        trace_id=of.trace_id if of is not None else random.getrandbits(128) or 1,
        span_id=of.span_id if of is not None else random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
    )
    return trace.use_span(trace.NonRecordingSpan(context), end_on_exit=False)


def traceparent_of(span: Span | None) -> str | None:
    """The W3C traceparent (version 00) naming `span`: what the propagator would send."""
    if span is None:
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span (what an operation stores at submit)."""
    if _tracer is None:
        return None
    current = trace.get_current_span()
    return traceparent_of(current) if current.get_span_context().is_valid else None


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32 hex digits of a traceparent's trace id."""
    if traceparent is None:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def annotate(**attributes: str | int | bool) -> None:
    """Attributes on the current span (`workfleet.` prefixed)."""
    if _tracer is None:
        return
    trace.get_current_span().set_attributes(_prefixed(attributes) or {})


def _parent(traceparent: str | None) -> Any:
    """The context to start a span in: the current one, unless `traceparent` names another
    trace than the current span's (then that trace, under the span it names)."""
    remote = _span_context(traceparent)
    if remote is None:
        return None
    current = trace.get_current_span().get_span_context()
    if current.is_valid and current.trace_id == remote.trace_id:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(remote))


def _span_context(traceparent: str | None) -> trace.SpanContext | None:
    """A W3C traceparent's span context; None for anything that is not a valid one."""
    found = _TRACEPARENT.fullmatch(traceparent) if traceparent else None
    if found is None or found[1] == "ff" or (found[1] == "00" and found[5]):
        return None
    context = trace.SpanContext(
        trace_id=int(found[2], 16),
        span_id=int(found[3], 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(found[4], 16)),
    )
    return context if context.is_valid else None


def _prefixed(attributes: Attributes | None) -> dict[str, str | int | float | bool] | None:
    if not attributes:
        return None
    return {f"workfleet.{key}": value for key, value in attributes.items()}
