"""Simulated workers for scale runs: hundreds of workers per process, each a worker in its own
right as the backend sees it (its own port and advertise URL, identity, instance id, session,
HTTP client and reports), so a 2-core machine can put 1,000 workers in front of one backend.

What is real: the worker's HTTP routes and their auth (worker.app's routers), its decisions
(WorkerService: slot checks, leases, /health with its slot usage, what it reports when it
registers), its Agent (register with backoff, the held session, re-registration, deregister) and
its Reporter (results under the lease, batched, retried). What is simulated: only the runner.
Operations run as asyncio tasks of this process instead of executor processes, and only
`diagnostic` noop, sleep and fail are simulated; other actions fail with a message saying so.
Token mode only (mtls would need a certificate per simulated worker).

Left out on purpose, since the backend never calls them: the worker's /metrics and its access
log. Run `python -m workfleet.harness.simworkers --help` for one process; SimFleet (below)
starts several against a Cluster and stops them (each worker deregisters)."""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from workfleet.api_errors import map_domain_errors
from workfleet.domain.operations import Lease
from workfleet.harness.cluster import Cluster
from workfleet.observability.logging import configure_logging
from workfleet.operations.diagnostic import DiagnosticParams
from workfleet.operations.registry import load_operation_types
from workfleet.protocol import CapabilitiesModel
from workfleet.security.tokens import auth_header
from workfleet.serving import AppServer, server_config, wait_started
from workfleet.settings import WorkerSettings
from workfleet.worker.agent import Agent
from workfleet.worker.app import leave, public, router
from workfleet.worker.execution_log import ExecutionLog
from workfleet.worker.reporter import Reporter
from workfleet.worker.runner import Job, JobEvent, Runner
from workfleet.worker.service import Identity, WorkerService

SIM_TYPE = "simulated"
OPERATION_TYPE = "diagnostic"
REGISTERED_EVENT = "simworkers_registered"
LEAVE_CONCURRENCY = 64  # deregistrations at once when a process stops


# ---- the runner: operations as asyncio tasks -------------------------------------------------


async def _never_fetched(_a: str, _b: str) -> Path:
    raise RuntimeError("simulated operations fetch nothing")


async def _never_uploaded(_job: Job, _name: str, _path: Path) -> None:
    raise RuntimeError("simulated operations upload nothing")


class SimRunner(Runner):
    """The worker's Runner with its executor processes replaced by asyncio tasks: jobs, slots,
    events, cancel and hand-back behave as the real one's do, so WorkerService and the Reporter
    above it run unchanged."""

    def __init__(
        self, slots: int, *, on_event: Callable[[JobEvent], None], speed: float = 1.0
    ) -> None:
        super().__init__(
            slots,
            cancel_grace_s=0.0,
            on_event=on_event,
            fetch_dataset=_never_fetched,
            fetch_artifact=_never_fetched,
            upload_artifact=_never_uploaded,
            preload=[],
            speed=speed,
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """No executor processes to start."""

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    def run(self, job: Job) -> None:
        if self.free_slots <= 0:
            raise RuntimeError("no free slot")
        self.jobs[job.operation_id] = job
        self._idle.clear()
        task = asyncio.create_task(self._execute(job))
        self._tasks[job.operation_id] = task
        task.add_done_callback(lambda _done: self._tasks.pop(job.operation_id, None))

    def cancel(self, operation_id: str, lease: Lease | None = None) -> bool:
        job = self.jobs.get(operation_id)
        if job is None or (lease is not None and job.lease != lease):
            return False
        if job.state == "running":
            job.state = "cancelling"
            self._tasks[operation_id].cancel()
        return True

    def hand_back(self) -> list[Job]:
        handed = list(self.jobs.values())
        for job in handed:
            job.silent = True
            self._tasks[job.operation_id].cancel()
        return handed

    async def _execute(self, job: Job) -> None:
        job.started_at = time.time()
        self._emit(JobEvent("started", job))
        try:
            outcome, result, error = await self._simulate(job)
        except asyncio.CancelledError:  # a cancel, or a hand-back (silent): the job ends here
            self._finish(job, "cancelled", None, None)
            return
        self._finish(job, outcome, result, error)

    async def _simulate(self, job: Job) -> tuple[str, Any, dict[str, Any] | None]:
        """What the diagnostic operation would produce, in the executor's error format."""
        try:
            params = DiagnosticParams.model_validate(job.params)
        except ValidationError as exc:
            return "failed", None, _exception("ValidationError", str(exc))
        if params.action == "fail":
            message = f"diagnostic failure requested ({params.payload!r})"
            return "failed", None, _exception("DiagnosticFailure", message)
        if params.action not in ("noop", "sleep"):
            message = f"simulated workers run noop, sleep and fail, not {params.action}"
            return "failed", None, _exception("NotSimulated", message)
        if params.action == "sleep":
            await self._sleep(job, params)
        return "completed", {"action": params.action, "payload": params.payload}, None

    async def _sleep(self, job: Job, params: DiagnosticParams) -> None:
        step_s = params.seconds / self._speed / params.steps
        for step in range(params.steps):
            await asyncio.sleep(step_s)
            job.progress = {
                "current_step": step + 1,
                "total_steps": params.steps,
                "percentage": 100.0 * (step + 1) / params.steps,
            }
            self._emit(JobEvent("progress", job))


def _exception(name: str, message: str) -> dict[str, Any]:
    return {"type": "exception", "message": f"{name}: {message}", "traceback": None}


# ---- one simulated worker --------------------------------------------------------------------


@dataclass
class SimWorker:
    app: FastAPI
    service: WorkerService
    agent: Agent
    client: httpx.AsyncClient
    registered_s: float | None = None  # from starting the agent to the first registration
    agent_task: "asyncio.Task[None] | None" = field(default=None, repr=False)

    @property
    def worker_id(self) -> str:
        return self.service.identity.worker_id

    async def start(self) -> None:
        assert self.service.reporter is not None
        self.service.reporter.start()
        began = time.monotonic()
        self.agent_task = asyncio.create_task(self.agent.run())
        await self.agent.registered.wait()
        self.registered_s = time.monotonic() - began

    async def leave(self, grace_s: float) -> None:
        """What a real worker does on SIGTERM (worker.app.leave), then close its clients."""
        await leave(self.service, self.agent, grace_s, on_failure=lambda _call: None)
        if self.agent_task is not None:  # after deregistering: a dropped session is probed
            self.agent_task.cancel()
            with contextlib.suppress(BaseException):
                await self.agent_task
        if self.service.reporter is not None:
            await self.service.reporter.close()
        await self.client.aclose()


def sim_worker(
    worker_id: str, endpoint_url: str, settings: WorkerSettings, tls: ssl.SSLContext
) -> SimWorker:
    """`tls`: one context for every client of the process (plain http in token mode, but an
    httpx client would otherwise load the CA bundle once per simulated worker)."""
    client = httpx.AsyncClient(
        base_url=settings.backend_url.rstrip("/"),
        headers=auth_header(settings.cluster_secrets),
        timeout=settings.backend_timeout_s,
        trust_env=False,
        verify=tls,
    )
    identity = Identity(
        worker_id=worker_id,
        worker_type=SIM_TYPE,
        capabilities=CapabilitiesModel(cores=1, memory_gb=1.0, slots=settings.slots),
        operation_types=[OPERATION_TYPE],
    )
    runner = SimRunner(settings.slots, on_event=lambda e: service.on_job_event(e))
    offered = {OPERATION_TYPE: load_operation_types()[OPERATION_TYPE]}
    service = WorkerService(identity, runner, offered)
    service.endpoint_url = endpoint_url
    if settings.execution_log is not None:  # what ran where, for the ledger (harness/ledger.py)
        service.execution_log = ExecutionLog(settings.execution_log, worker_id)
    service.reporter = Reporter(
        client,
        worker_id,
        progress_interval_s=settings.progress_report_interval_s,
        on_stale=service.abandon,
    )
    agent = Agent(
        client,
        registration=service.registration,
        on_stop_operations=service.stop_operations,
        backoff_max_s=settings.register_backoff_max_s,
    )
    return SimWorker(_worker_app(settings, service), service, agent, client)


def _worker_app(settings: WorkerSettings, service: WorkerService) -> FastAPI:
    """The real worker's routes (dispatch, batch, cancel, operation, /health, /livez) with
    their auth, over this simulated worker's service."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.service = service
    app.include_router(router)
    app.include_router(public)
    map_domain_errors(app)
    return app


# ---- one process: many workers, one server, one port each ------------------------------------


class ByPort:
    """One ASGI server for every worker of the process: each request goes to the app of the
    worker whose port it came in on, so each worker still has its own address (and the
    backend its own connections to it) as in production."""

    def __init__(self, apps: dict[int, FastAPI]) -> None:
        self._apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the workers start and stop outside the server
            await _lifespan(receive, send)
            return
        await self._apps[scope["server"][1]](scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _listener(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(count: int, prefix: str, settings: WorkerSettings) -> None:
    """Run `count` workers named PREFIX-0.. until SIGTERM; then each deregisters. Prints one
    JSON line once all are registered (with each one's time to register)."""
    tls = ssl.create_default_context()
    sockets = [_listener(settings.host) for _ in range(count)]
    workers: dict[int, SimWorker] = {}
    for index, sock in enumerate(sockets):
        port = int(sock.getsockname()[1])
        url = f"http://{settings.host}:{port}"
        workers[port] = sim_worker(f"{prefix}-{index}", url, settings, tls)

    async def leave_all() -> None:
        limit = asyncio.Semaphore(LEAVE_CONCURRENCY)

        async def leave(worker: SimWorker) -> None:
            async with limit:
                await worker.leave(settings.shutdown_grace_s)

        await asyncio.gather(*(leave(w) for w in workers.values()))

    by_port = ByPort({port: worker.app for port, worker in workers.items()})
    config = server_config(by_port, settings.host, 0)  # type: ignore[arg-type]  # any ASGI app
    server = AppServer(config, before_shutdown=leave_all)
    serving = asyncio.create_task(server.serve(sockets=sockets))
    await wait_started(server)
    await asyncio.gather(*(w.start() for w in workers.values()))
    registered = [w.registered_s for w in workers.values() if w.registered_s is not None]
    print(json.dumps({"event": REGISTERED_EVENT, "workers": count, "register_s": registered}))
    sys.stdout.flush()
    await serving


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Simulated workers in one process (token mode: WORKFLEET_CLUSTER_TOKEN; "
        "the backend from WORKFLEET_BACKEND_URL; WORKFLEET_* worker settings apply)."
    )
    parser.add_argument("--count", type=int, required=True, help="workers in this process")
    parser.add_argument("--prefix", required=True, help="worker ids are PREFIX-0, PREFIX-1...")
    args = parser.parse_args()
    settings = WorkerSettings()
    if settings.auth_mode != "token":
        parser.error("simulated workers run in token mode only")
    configure_logging(level=settings.log_level, fields={"service": "simworkers"})
    uvloop.run(serve(args.count, args.prefix, settings))


# ---- the parent side: several processes against a Cluster -------------------------------------


@dataclass
class SimProcess:
    popen: "subprocess.Popen[bytes]"
    out_path: Path
    log_path: Path

    def registered(self) -> dict[str, Any] | None:
        """The process's registration summary, once all its workers are registered."""
        if not self.out_path.exists():
            return None
        for line in self.out_path.read_text().splitlines():
            if REGISTERED_EVENT in line:
                parsed: dict[str, Any] = json.loads(line)
                return parsed
        return None


class SimFleet:
    """`count` simulated workers spread over `processes` processes, registered with the
    cluster's backend (token mode), named sim-P-I (process P, index I)."""

    def __init__(
        self,
        cluster: Cluster,
        count: int,
        processes: int,
        *,
        slots: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        if cluster.auth_mode != "token":
            raise ValueError("simulated workers run in token mode only")
        self.cluster = cluster
        self.slots = slots
        self.sizes = [count // processes + (p < count % processes) for p in range(processes)]
        self._env = env or {}
        self.processes: list[SimProcess] = []

    @property
    def worker_ids(self) -> list[str]:
        return [f"sim-{p}-{i}" for p, size in enumerate(self.sizes) for i in range(size)]

    def start(self) -> None:
        for index, size in enumerate(self.sizes):
            if size:
                self.processes.append(self._spawn(index, size))

    def _spawn(self, index: int, size: int) -> SimProcess:
        root = self.cluster.root
        root.mkdir(parents=True, exist_ok=True)
        out_path, log_path = root / f"simworkers-{index}.out", root / f"simworkers-{index}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLEET_")}
        env.update(
            {
                "WORKFLEET_AUTH_MODE": "token",
                "WORKFLEET_CLUSTER_TOKEN": self.cluster.token,
                "WORKFLEET_BACKEND_URL": self.cluster.url,
                "WORKFLEET_SLOTS": str(self.slots),
                "WORKFLEET_LOG_LEVEL": "WARNING",
                "WORKFLEET_EXECUTION_LOG": str(root / f"executions-sim-{index}.jsonl"),
                **self.cluster.timing.worker_env(),
                **self._env,
            }
        )
        args = ["--count", str(size), "--prefix", f"sim-{index}"]
        with open(out_path, "wb") as out, open(log_path, "wb") as log:
            popen = subprocess.Popen(  # noqa: S603 - our own module
                [sys.executable, "-m", "workfleet.harness.simworkers", *args],
                env=env,
                stdout=out,
                stderr=log,
                start_new_session=True,
            )
        return SimProcess(popen, out_path, log_path)

    def registration_times(self) -> list[float] | None:
        """Each worker's time from its agent's start to its registration, once all are in."""
        reports = [process.registered() for process in self.processes]
        if any(report is None for report in reports):
            return None
        return [t for report in reports if report for t in report["register_s"]]

    def check_alive(self) -> None:
        for process in self.processes:
            if process.popen.poll() is not None:
                log = process.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"a simworkers process exited:\n{log}")

    async def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM: every worker deregisters, then the process ends (SIGKILL after timeout)."""
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            while process.popen.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if process.popen.poll() is None:
                process.popen.kill()
                process.popen.wait(timeout=5)


if __name__ == "__main__":
    main()
