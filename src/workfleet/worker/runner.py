"""The runner: a pool of executor processes, one per slot, so operations never block the
worker's event loop, a crash costs one process, and cancel can end in a kill."""

import asyncio
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic_core import PydanticSerializationError

from workfleet.domain.operations import Lease
from workfleet.observability import tracing
from workfleet.observability.logging import child_setup as logging_setup
from workfleet.operations.context import WORKER_PID_ENV
from workfleet.protocol import Progress
from workfleet.worker.executor import executor_main

log = structlog.get_logger(__name__)
_MP = multiprocessing.get_context("forkserver")

JobState = Literal["running", "cancelling"]


@dataclass(slots=True)
class Job:
    operation_id: str
    operation_type: str
    params: dict[str, Any]
    lease: Lease
    state: JobState = "running"
    progress: dict[str, Any] | None = None
    started_at: float | None = None
    accepted_mono: float = field(default_factory=time.monotonic)
    silent: bool = False  # handed back at shutdown: its end is not an outcome
    # the latest upload of each artifact name: each waits for the one before it of that name,
    # so a later checkpoint can never be overwritten by an earlier one that was retried
    uploads: dict[str, "asyncio.Task[None]"] = field(default_factory=dict)
    trace: tracing.Span | None = None  # its `execute` span (tracing on), ended with the job


@dataclass(frozen=True, slots=True)
class JobEvent:
    kind: Literal["started", "progress", "finished"]
    job: Job
    outcome: str | None = None
    result: Any = None
    error: dict[str, Any] | None = None


class _Executor:
    def __init__(
        self,
        on_message: Callable[["_Executor", tuple[Any, ...]], None],
        on_exit: Callable[["_Executor", int | None], None],
        speed: float,
    ) -> None:
        parent, child = _MP.Pipe()
        self.conn: Connection = parent
        self.process: BaseProcess = _MP.Process(
            target=executor_main,
            args=(child, speed, tracing.child_setup(), logging_setup()),
            daemon=True,
        )
        self.process.start()
        child.close()
        self.job: Job | None = None
        loop = asyncio.get_running_loop()

        def read() -> None:
            # the loop may close first when the worker stops: then nobody needs the news
            with contextlib.suppress(RuntimeError):
                while True:
                    try:
                        message = self.conn.recv()
                    except (EOFError, OSError):
                        break
                    loop.call_soon_threadsafe(on_message, self, message)
                self.process.join()
                loop.call_soon_threadsafe(on_exit, self, self.process.exitcode)

        threading.Thread(target=read, name=f"executor-{self.process.pid}", daemon=True).start()

    def send(self, message: tuple[Any, ...]) -> None:
        self.conn.send(message)

    def kill(self) -> None:
        if self.process.pid is not None and self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)


class Runner:
    def __init__(
        self,
        slots: int,
        *,
        cancel_grace_s: float,
        on_event: Callable[[JobEvent], None],
        fetch_dataset: Callable[[str, str], Awaitable[Path]],
        fetch_artifact: Callable[[str, str], Awaitable[Path | None]],
        upload_artifact: Callable[[Job, str, Path], Awaitable[None]],
        preload: list[str],
        speed: float = 1.0,
    ) -> None:
        """`preload`: modules the forkserver imports once, so that executors start with the
        heavy imports (pandas, torch) done and the worker's own process never does them.
        `speed`: the worker's declared speed, which operations see as `ctx.speed`."""
        self.slots = slots
        self._speed = speed
        self._preload = preload
        self._cancel_grace_s = cancel_grace_s
        self._on_event = on_event
        self._fetches: dict[str, Callable[[str, str], Awaitable[Path | None]]] = {
            "dataset": fetch_dataset,
            "artifact": fetch_artifact,
        }
        self._upload_artifact = upload_artifact
        self._executors: list[_Executor] = []
        self.jobs: dict[str, Job] = {}
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._broken: str | None = None
        self._spawning: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        os.environ[WORKER_PID_ENV] = str(os.getpid())  # inherited by the forkserver's children
        _MP.set_forkserver_preload(
            ["workfleet.worker.executor", *self._preload, *tracing.preload_modules()]
        )
        for _ in range(self.slots):
            await self._spawn()

    async def stop(self) -> None:
        self._stopping = True
        for executor in self._executors:
            executor.kill()
        self._executors.clear()

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.jobs)

    def run(self, job: Job) -> None:
        """Start a job now; the caller has checked there is a free slot."""
        if self.free_slots <= 0:
            raise RuntimeError("no free slot")
        self.jobs[job.operation_id] = job
        self._idle.clear()
        idle = next((e for e in self._executors if e.job is None), None)
        if idle is not None:
            self._start_on(idle, job)
        # else: an executor is being replaced; it takes the job when it is up

    def cancel(self, operation_id: str, lease: Lease | None = None) -> bool:
        """Stop a job (only the attempt holding `lease`, when given)."""
        job = self.jobs.get(operation_id)
        if job is None or (lease is not None and job.lease != lease):
            return False
        if job.state == "running":
            job.state = "cancelling"
            executor = self._executor_of(operation_id)
            if executor is None:  # not started yet: nothing to stop
                self._finish(job, "cancelled", None, None)
                return True
            executor.send(("cancel", operation_id))
            asyncio.get_running_loop().call_later(self._cancel_grace_s, self._kill_if_running, job)
        return True

    async def wait_idle(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._idle.is_set()

    def hand_back(self) -> list[Job]:
        """Shutdown: stop everything still running without reporting an outcome."""
        handed = list(self.jobs.values())
        for job in handed:
            job.silent = True
            executor = self._executor_of(job.operation_id)
            if executor is not None:
                executor.kill()
            else:
                self.jobs.pop(job.operation_id, None)
        return handed

    def _kill_if_running(self, job: Job) -> None:
        # this very job: a later attempt of the same operation may run there by now
        executor = next((e for e in self._executors if e.job is job), None)
        if executor is not None:
            log.warning("operation_killed_after_grace", operation_id=job.operation_id)
            executor.kill()

    def _executor_of(self, operation_id: str) -> _Executor | None:
        return next(
            (
                e
                for e in self._executors
                if e.job is not None and e.job.operation_id == operation_id
            ),
            None,
        )

    def _start_on(self, executor: _Executor, job: Job) -> None:
        executor.job = job
        traceparent = tracing.traceparent_of(job.trace)  # the executor's `run` span continues it
        executor.send(("run", job.operation_id, job.operation_type, job.params, traceparent))

    @property
    def broken(self) -> str | None:
        """Why executors cannot be started (the worker then reports itself unhealthy)."""
        return self._broken

    async def _spawn(self) -> None:
        # Starting a process blocks briefly (a fork by the forkserver), and only happens at
        # start-up or after a crash or kill.
        try:
            executor = _Executor(self._on_message, self._on_exit, self._speed)
        except OSError as exc:
            self._broken = f"cannot start an executor process: {exc}"
            log.error("executor_start_failed", error=str(exc))
            asyncio.get_running_loop().call_later(1.0, self._respawn)
            return
        self._broken = None
        self._executors.append(executor)
        self._next_for(executor)

    def _respawn(self) -> None:
        if not self._stopping:
            self._background(self._spawn())

    def _on_message(self, executor: _Executor, message: tuple[Any, ...]) -> None:
        job = executor.job
        if job is None or message[1] != job.operation_id:
            return
        with tracing.activate(job.trace):  # what it causes (uploads, fetches, logs) in its trace
            self._handle(executor, job, message)

    def _handle(self, executor: _Executor, job: Job, message: tuple[Any, ...]) -> None:
        if message[0] == "started":
            job.started_at = message[2]
            self._emit(JobEvent("started", job))
        elif message[0] == "progress":
            job.progress = clean_progress(message[2]) or job.progress
            self._emit(JobEvent("progress", job))
        elif message[0] == "finished":
            _, _, outcome, result, error, progress = message
            executor.job = None
            job.progress = clean_progress(progress) or job.progress
            if job.uploads:  # the outcome is reported once its artifacts are stored
                self._background(self._finish_after_uploads(job, outcome, result, error))
            else:
                self._finish(job, outcome, result, error)
            self._next_for(executor)
        elif message[0] == "artifact":
            _, _, name, path = message
            upload = self._upload_after(job.uploads.get(name), job, name, Path(path))
            job.uploads[name] = self._background(upload)
        elif message[0] == "request":
            self._background(self._serve_request(executor, message))

    def _background(self, work: Awaitable[None]) -> "asyncio.Task[None]":
        task = asyncio.ensure_future(work)
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)
        return task

    async def _finish_after_uploads(
        self, job: Job, outcome: str, result: Any, error: dict[str, Any] | None
    ) -> None:
        await asyncio.gather(*job.uploads.values(), return_exceptions=True)
        self._finish(job, outcome, result, error)

    async def _upload_after(
        self, previous: "asyncio.Task[None] | None", job: Job, name: str, path: Path
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        await self._upload_artifact(job, name, path)

    async def _serve_request(self, executor: _Executor, message: tuple[Any, ...]) -> None:
        _, _, request_id, kind, args = message
        try:
            path = await self._fetches[kind](*args)
            reply: tuple[Any, ...] = ("reply", request_id, str(path) if path else None, None)
        except Exception as exc:  # the operation gets the reason and fails with it
            reply = ("reply", request_id, None, str(exc))
        if executor in self._executors:
            executor.send(reply)

    def _on_exit(self, executor: _Executor, exitcode: int | None) -> None:
        if executor in self._executors:
            self._executors.remove(executor)
        job = executor.job
        if job is not None:
            if job.state == "cancelling":
                self._finish(job, "cancelled", None, None)
            else:
                self._finish(job, "failed", None, _crash_error(exitcode))
        self._respawn()

    def _next_for(self, executor: _Executor) -> None:
        waiting = next(
            (
                j
                for j in self.jobs.values()
                if j.started_at is None and self._executor_of(j.operation_id) is None
            ),
            None,
        )
        if waiting is not None:
            self._start_on(executor, waiting)

    def _finish(self, job: Job, outcome: str, result: Any, error: dict[str, Any] | None) -> None:
        failed = f"{error.get('type')}: {error.get('message')}" if error else None
        tracing.end(job.trace, error=failed, outcome=outcome)
        self.jobs.pop(job.operation_id, None)
        if not self.jobs:
            self._idle.set()
        if not job.silent:
            self._emit(JobEvent("finished", job, outcome, result, error))

    def _emit(self, event: JobEvent) -> None:
        try:
            with tracing.activate(event.job.trace):  # the handlers' log lines in its trace
                self._on_event(event)
        except Exception:
            log.exception("job_event_handler_failed", operation_id=event.job.operation_id)


def _crash_error(exitcode: int | None) -> dict[str, Any]:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        message = f"the operation's process was killed by {name}"
    else:
        message = f"the operation's process exited with code {exitcode}"
    return {"type": "crashed", "message": message, "traceback": None}


def clean_progress(raw: Any) -> dict[str, Any] | None:
    """Progress as the wire carries it, or None (logged) if an operation reported something
    that is not (a percentage of 150, a numpy scalar, NaN): bad progress must never stop the
    worker's reporting or its /health."""
    if raw is None:
        return None
    try:
        return Progress.model_validate(raw).model_dump(mode="json", exclude_none=True)
    except (ValueError, TypeError, PydanticSerializationError) as exc:
        log.warning("progress_dropped", error=str(exc)[:200])
        return None
