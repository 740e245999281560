"""The ids of the current OpenTelemetry span, for log lines and metric exemplars.

Read-only and optional: nothing here starts, ends or configures a span (that is
observability/tracing.py's business). Without opentelemetry installed, or with no span
recording, every function answers None and costs one context-variable lookup.
"""

from collections.abc import MutableMapping
from types import ModuleType
from typing import Any

_trace: ModuleType | None
try:  # opentelemetry-api is a dependency, but logs and metrics must not need it
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised only without the package
    _trace = None


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) as lowercase hex (W3C form) when a valid span is current."""
    if _trace is None:
        return None
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def trace_exemplar(trace_id: str | None = None) -> dict[str, str] | None:
    """An exemplar for a histogram observation: `trace_id` if given (an operation's stored
    trace), else the current span's trace when it is sampled; None when there is neither.
    Exemplars appear only in the OpenMetrics exposition (Prometheus asks for it)."""
    if trace_id:
        return {"trace_id": trace_id}
    if _trace is None:
        return None
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": f"{context.trace_id:032x}"}


def add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: `trace_id` and `span_id` of the current span, when there is one
    (the caller's own values win)."""
    ids = current_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event
