"""Structured logs: one JSON object per line (or readable console output for `workfleet up`).

Everything a process logs goes through one pipeline: structlog's own loggers, and the standard
library's (uvicorn, asyncio, Python warnings) through a handler that renders with the same
processors. Every line carries `event`, `level`, `timestamp`, the process's own fields
(`service`, and on a worker `worker_id` and `worker_type`), the ids bound for the work at hand
(`operation_id`, `attempt`, ... via structlog.contextvars), the `request_id` of the HTTP
request being served, and `trace_id`/`span_id` while a span is current.
"""

import io
import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import structlog

from workfleet.observability.correlation import add_trace_ids
from workfleet.request_ids import current_request_id

# libraries that log each request at INFO (httpx: every health check, with its URL)
QUIET_LIBRARIES = ("httpx", "httpcore", "hpack", "multipart")


@dataclass(frozen=True, slots=True)
class LogSetup:
    """What configure_logging needs, picklable: an operation's process gets its worker's."""

    json: bool = True
    level: str = "INFO"
    fields: Mapping[str, str] = field(default_factory=dict)


def add_request_id(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the id of the HTTP request being served, if any."""
    request_id = current_request_id.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def _static(fields: Mapping[str, str]) -> structlog.typing.Processor:
    def add(
        _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in fields.items():
            event.setdefault(key, value)
        return event

    return add


class _Handler(logging.Handler):
    """Standard-library records rendered by the structlog pipeline, written under the same
    per-file lock structlog's own lines use (so lines never interleave)."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter) -> None:
        super().__init__()
        self._printer = structlog.PrintLogger(file=stream)
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._printer.msg(self.format(record))
        except Exception:
            self.handleError(record)


def configure_logging(
    *,
    json: bool = True,
    level: str = "INFO",
    fields: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """`fields`: added to every line (service, worker_id...). `stream`: stderr by default."""
    out = stream if stream is not None else sys.stderr
    numeric = logging.getLevelName(level.upper())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _static(dict(fields or {})),
        add_trace_ids,
    ]
    renderer: list[structlog.typing.Processor] = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
        if json
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    root.addHandler(_Handler(out, formatter))
    root.setLevel(numeric)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)  # a library's warning is a log line too, not raw stderr
    global _setup
    _setup = LogSetup(json=json, level=level, fields=dict(fields or {}))


_setup: LogSetup | None = None  # this process's, for the processes it starts


def child_setup() -> LogSetup | None:
    """How this process logs (None: configure_logging was never called), for an operation's
    process to log the same way."""
    return _setup


def configure_from(setup: LogSetup, **extra: str) -> None:
    configure_logging(json=setup.json, level=setup.level, fields={**setup.fields, **extra})


MAX_LINE = 4000  # characters of one printed line kept in its event


class _LineLog(io.TextIOBase):
    """A text stream whose every line becomes an `operation_output` event: what operation code
    prints (or a library warns on stderr) stays one JSON object per line, with its ids."""

    def __init__(self, name: str, level: str) -> None:
        super().__init__()
        self._name = name
        self._level = level
        self._partial = ""
        self._lock = threading.Lock()
        self._log = structlog.get_logger("workfleet.output")

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            if len(self._partial) > MAX_LINE:
                lines.append(self._partial)
                self._partial = ""
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._partial = self._partial, ""
        self._emit(line)

    def _emit(self, line: str) -> None:
        if line.strip():
            getattr(self._log, self._level)(
                "operation_output", stream=self._name, line=line[:MAX_LINE]
            )


def capture_output() -> None:
    """In an operation's process, after configure_logging: sys.stdout and sys.stderr become
    log events (output written straight to the file descriptors by C code is not seen)."""
    sys.stdout = _LineLog("stdout", "info")
    sys.stderr = _LineLog("stderr", "warning")
