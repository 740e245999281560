"""The executor process: runs one operation at a time, for as long as its worker lives.

It is started once per slot and reused, so an operation starts in microseconds rather than
paying for a new interpreter; a crash or a kill costs only this process, which the worker
replaces. Tracing on in the worker: each operation runs in a `run` span, a child of the
traceparent its "run" message carries, exported from here (by a thread of its own) as soon as
it ends: this process may be killed at any time. Messages from the worker:
("run", id, type, params, traceparent_or_None), ("cancel", id), ("reply", ...).
Messages to the worker: ("started", id, ts), ("progress", id, dict),
("artifact", id, name, path), ("request", id, request_id, kind, args) answered by
("reply", request_id, path_or_None, error_or_None), and
("finished", id, outcome, result, error_or_None, progress).
"""

import contextlib
import ctypes
import json
import os
import queue
import signal
import tempfile
import threading
import time
import traceback
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import structlog

from workfleet.domain.artifacts import CHECKPOINT_ARTIFACT
from workfleet.observability import tracing
from workfleet.observability.logging import LogSetup, capture_output, configure_from
from workfleet.observability.metrics import error_type
from workfleet.operations.context import Cancelled
from workfleet.operations.registry import load_operation_types, runner_of

log = structlog.get_logger(__name__)
PROGRESS_MIN_INTERVAL_S = 0.05
PR_SET_PDEATHSIG = 1


class ArtifactMissing(Exception):
    """An artifact an operation asked for is not there, or failed its hash check."""


class _Context:
    def __init__(
        self,
        operation_id: str,
        send: Any,
        cancel: threading.Event,
        replies: "queue.SimpleQueue[tuple[Any, ...]]",
        speed: float = 1.0,
    ) -> None:
        self.operation_id = operation_id
        self.speed = speed
        self._send = send
        self._cancel = cancel
        self._replies = replies
        self._last_sent = 0.0
        self.last_progress: dict[str, Any] | None = None

    def dataset(self, symbol: str, timeframe: str) -> Any:
        """The bars of a dataset, fetched (and hash-checked) by the worker process, which holds
        the credentials; this process only reads the cached file."""
        # imported here, not at the top: the worker's main process imports this module too,
        # and must not pay for pandas (the forkserver preloads it for executors)
        from workfleet.operations.marketdata import DataError, parse_csv

        path, error = self._ask("dataset", symbol, timeframe)
        if error is not None:
            raise DataError(error)
        assert path is not None  # a dataset is a file or an error
        return parse_csv(Path(path).read_bytes())

    def artifact(self, operation_id: str, name: str) -> bytes:
        data = self._fetch_artifact(operation_id, name)
        if data is None:
            raise ArtifactMissing(f"operation {operation_id} has no artifact {name!r}")
        return data

    def save_checkpoint(self, data: bytes) -> None:
        self.write_artifact(CHECKPOINT_ARTIFACT, data)

    def load_checkpoint(self) -> bytes | None:
        return self._fetch_artifact(self.operation_id, CHECKPOINT_ARTIFACT)

    def _fetch_artifact(self, operation_id: str, name: str) -> bytes | None:
        path, error = self._ask("artifact", operation_id, name)
        if error is not None:
            raise ArtifactMissing(error)
        if path is None:
            return None
        fetched = Path(path)
        try:
            return fetched.read_bytes()
        finally:
            fetched.unlink(missing_ok=True)  # a private copy, fetched for this call alone

    def _ask(self, kind: str, *args: str) -> tuple[str | None, str | None]:
        """Ask the worker process for a file: (path or None, error or None); waits, but stops
        for a cancel."""
        request_id = uuid.uuid4().hex
        self._send(("request", self.operation_id, request_id, kind, args))
        while True:
            try:
                reply = self._replies.get(timeout=0.1)
            except queue.Empty:
                self.raise_if_cancelled()
                continue
            if reply[1] == request_id:
                return reply[2], reply[3]

    def report(self, **progress: Any) -> None:
        self.last_progress = {k: v for k, v in progress.items() if v is not None}
        now = time.monotonic()
        if now - self._last_sent >= PROGRESS_MIN_INTERVAL_S:
            self._last_sent = now
            self._send(("progress", self.operation_id, self.last_progress))

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def write_artifact(self, name: str, data: bytes) -> None:
        """Handed to the worker process, which uploads it under this attempt's lease before it
        reports the outcome."""
        fd, path = tempfile.mkstemp(prefix="workfleet-artifact-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        self._send(("artifact", self.operation_id, name, path))

    def raise_if_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()


def executor_main(
    conn: Connection,
    speed: float = 1.0,
    trace_setup: dict[str, str] | None = None,
    log_setup: LogSetup | None = None,
) -> None:
    _die_with_parent()
    _log_like_the_worker(log_setup)
    tracing.configure_child(trace_setup)  # None: not traced
    types = load_operation_types()
    cancel = threading.Event()
    jobs: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    replies: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    current: list[str | None] = [None]
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    def receive() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the worker is gone: so is everything it ran
            if message[0] == "run":
                jobs.put(message)
            elif message[0] == "cancel" and message[1] == current[0]:
                cancel.set()
            elif message[0] == "reply":
                replies.put(message)

    threading.Thread(target=receive, name="executor-receiver", daemon=True).start()
    while True:
        _, operation_id, operation_type, params, traceparent = jobs.get()
        cancel.clear()
        current[0] = operation_id
        structlog.contextvars.bind_contextvars(
            operation_id=operation_id, operation_type=operation_type
        )
        traced = {"operation_id": operation_id, "operation_type": operation_type}
        with tracing.joined("run", traceparent, traced) as span:
            began = time.monotonic()
            log.info("operation_run_started")
            send(("started", operation_id, time.time()))
            outcome, result, error, progress = _run(
                types, operation_type, params, _Context(operation_id, send, cancel, replies, speed)
            )
            _log_outcome(outcome, error, time.monotonic() - began)
            tracing.annotate(outcome=outcome)
            tracing.set_error(span, error["message"] if error else None)
        current[0] = None
        send(("finished", operation_id, outcome, result, error, progress))
        tracing.flush_soon()  # traced: exported now, in the background; the next job never waits


def _run(types: Any, operation_type: str, params: Any, ctx: _Context) -> tuple[Any, ...]:
    try:
        spec = types[operation_type]
        value = runner_of(spec)(spec.params_model.model_validate(params), ctx)
        json.dumps(value)  # the result crosses the wire as JSON: refuse anything else here
    except Cancelled:
        return "cancelled", None, None, ctx.last_progress
    except BaseException as exc:
        if ctx.cancelled():
            return "cancelled", None, None, ctx.last_progress
        error = {
            "type": "exception",
            "message": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=20),
        }
        return "failed", None, error, ctx.last_progress
    if ctx.cancelled():
        return "cancelled", None, None, ctx.last_progress
    return "completed", value, None, ctx.last_progress


def _log_like_the_worker(setup: LogSetup | None) -> None:
    """JSON lines with the worker's fields (service "executor"); what the operation prints
    becomes events too."""
    if setup is not None:
        configure_from(setup, service="executor")
        capture_output()


def _log_outcome(outcome: str, error: dict[str, Any] | None, seconds: float) -> None:
    """The outcome as this process saw it: why it failed (the message; the traceback goes to
    the operation's record), how long it ran."""
    if error is None:
        log.info("operation_run_finished", outcome=outcome, duration_s=round(seconds, 6))
        return
    log.warning(
        "operation_run_finished",
        outcome=outcome,
        duration_s=round(seconds, 6),
        error_type=error_type(error),
        error=str(error.get("message", ""))[:1000],
    )


def _die_with_parent() -> None:
    """Linux: die when the process that started us dies (it exits when the worker does)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
