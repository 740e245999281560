"""`workfleet backend`, `workfleet worker`: the only place servers are started."""

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path

import structlog
import typer
from fastapi import FastAPI

from workfleet.backend.app import create_app
from workfleet.backend.orchestrator import Orchestrator
from workfleet.cli.common import fail, given, settings_or_exit
from workfleet.harness import broken
from workfleet.observability import tracing
from workfleet.observability.logging import configure_logging
from workfleet.security.tls import ReloadingServerTls, check_files
from workfleet.serving import AppServer, bound_port, server_config
from workfleet.settings import (
    AuthMode,
    BackendSettings,
    LogFormat,
    Placement,
    TlsPaths,
    WorkerSettings,
)
from workfleet.worker.app import create_worker_app, drain, offered_operation_types
from workfleet.worker.certificates import enroll_if_needed, own_paths

log = structlog.get_logger(__name__)


async def serve_backend(
    settings: BackendSettings,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    orchestrator_type: type[Orchestrator] = Orchestrator,
) -> None:
    app = create_app(settings, orchestrator_type=orchestrator_type)
    # clients may come with an API key and no certificate; workers prove their identity
    tls = _server_tls(
        settings,
        settings.tls_paths("backend"),
        require_client_cert=False,
        on_failure=_reload_failure_counter(app),
    )

    async def release_sessions() -> None:
        app.state.sessions.close()

    server = AppServer(
        server_config(
            app, settings.host, settings.port, tls=tls, trust_domain=settings.trust_domain
        ),
        before_shutdown=release_sessions,
    )
    serving = asyncio.create_task(server.serve())
    await _until_started(server, serving)
    watching = _watch(tls, settings.tls_reload_interval_s)
    if started is not None:
        started.set()
    if stop is not None:
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stopping.cancel()
    await serving
    if watching is not None:
        watching.cancel()


async def serve_worker(settings: WorkerSettings) -> None:
    app = create_worker_app(settings)
    tls = _server_tls(
        settings,
        own_paths(settings),
        require_client_cert=True,
        on_failure=_reload_failure_counter(app),
    )
    server = AppServer(
        server_config(
            app,
            settings.host,
            settings.resolved_port(),
            tls=tls,
            trust_domain=settings.trust_domain,
            graceful_s=WORKER_CLOSE_S,
        ),
        before_shutdown=lambda: drain(app, settings.shutdown_grace_s),
    )
    serving = asyncio.create_task(server.serve())
    await _until_started(server, serving)
    _watch(tls, settings.tls_reload_interval_s)
    scheme = "https" if tls is not None else "http"
    app.state.service.endpoint_url = settings.advertise_url or _default_url(
        scheme, settings.host, bound_port(server)
    )
    app.state.endpoint_ready.set()
    agent: asyncio.Task[None] = app.state.agent_task
    await asyncio.wait({serving, agent}, return_when=asyncio.FIRST_COMPLETED)
    refused = agent.exception() if agent.done() and not agent.cancelled() else None
    if refused is not None:
        server.should_exit = True
    await serving
    if refused is not None:
        fail(str(refused))


async def _until_started(server: AppServer, serving: "asyncio.Task[None]") -> None:
    while not server.started:
        if serving.done():
            serving.result()
            fail("the server stopped during start-up (is the port already in use?)")
        await asyncio.sleep(0.01)


def _default_url(scheme: str, host: str, port: int) -> str:
    if host in ("0.0.0.0", "::"):  # noqa: S104 - naming what was bound, not binding
        host = socket.getfqdn()
    return f"{scheme}://{host}:{port}"


def _server_tls(
    settings: BackendSettings | WorkerSettings,
    paths: TlsPaths,
    *,
    require_client_cert: bool,
    on_failure: Callable[[], None] | None = None,
) -> ReloadingServerTls | None:
    if settings.auth_mode != "mtls":
        return None
    return settings_or_exit(
        lambda: ReloadingServerTls(
            paths, require_client_cert=require_client_cert, on_reload_failure=on_failure
        )
    )


def _reload_failure_counter(app: FastAPI) -> Callable[[], None] | None:
    """mtls: workfleet_tls_reload_failures_total of the app's metrics counts failed reloads."""
    counter = getattr(app.state.metrics, "tls_reload_failures", None)
    return counter.inc if counter is not None else None


_watchers: set["asyncio.Task[None]"] = set()


def _watch(tls: ReloadingServerTls | None, interval_s: float) -> "asyncio.Task[None] | None":
    """Reload the certificate files when they change, for as long as the server runs."""
    if tls is None:
        return None
    task = asyncio.create_task(tls.watch(interval_s))
    _watchers.add(task)  # held: the loop keeps only weak references to tasks
    task.add_done_callback(_watchers.discard)
    return task


# a worker has drained (results delivered, deregistered) before its listener closes: what is
# left are the backend's idle keep-alive connections, which need no grace
WORKER_CLOSE_S = 1

TlsCert = typer.Option(
    None, help="mtls: certificate [env WORKFLEET_TLS_CERT; <data-dir>/pki/issued/<name>.crt]"
)
TlsKey = typer.Option(
    None, help="mtls: private key, mode 0600 [env WORKFLEET_TLS_KEY; next to the certificate]"
)
TlsCa = typer.Option(
    None, help="mtls: CA bundle, the only roots trusted [env WORKFLEET_TLS_CA; <data-dir>/pki/]"
)


def backend(
    host: str | None = typer.Option(None, help="Bind address [env WORKFLEET_HOST; 127.0.0.1]"),
    port: int | None = typer.Option(None, help="Port [env WORKFLEET_PORT; 8000]"),
    data_dir: Path | None = typer.Option(None, help="Data directory [env WORKFLEET_DATA_DIR]"),
    database_url: str | None = typer.Option(
        None, help="Database URL (default: SQLite in the data dir)"
    ),
    auth_mode: AuthMode | None = typer.Option(
        None, help="none (loopback only), token or mtls [env WORKFLEET_AUTH_MODE; token]"
    ),
    tls_cert: Path | None = TlsCert,
    tls_key: Path | None = TlsKey,
    tls_ca: Path | None = TlsCa,
    health_interval: float | None = typer.Option(
        None, "--health-interval", help="Seconds between health checks [10]"
    ),
    health_failure_threshold: int | None = typer.Option(
        None, help="Failed checks before unavailable [3]"
    ),
    worker_removal: float | None = typer.Option(
        None, "--worker-removal", help="Seconds unavailable before removal [300]"
    ),
    placement: Placement | None = typer.Option(
        None,
        help="Placement policy: round_robin (least recently used), capacity (most free "
        "capacity) or fastest (learned speeds, expected completion) "
        "[env WORKFLEET_PLACEMENT; round_robin]",
    ),
    aging_interval: float | None = typer.Option(
        None,
        "--aging-interval",
        help="Seconds a queued operation waits to gain one priority level, so nothing starves "
        "[env WORKFLEET_AGING_INTERVAL_S; 300]",
    ),
    log_format: LogFormat | None = typer.Option(None, help="json or console"),
) -> None:
    """Run the backend: API, registry, health monitor, scheduler."""
    settings = settings_or_exit(
        lambda: BackendSettings(
            **given(
                host=host,
                port=port,
                data_dir=data_dir,
                database_url=database_url,
                auth_mode=auth_mode,
                tls_cert=tls_cert,
                tls_key=tls_key,
                tls_ca=tls_ca,
                health_interval_s=health_interval,
                health_failure_threshold=health_failure_threshold,
                worker_removal_s=worker_removal,
                placement=placement,
                aging_interval_s=aging_interval,
                log_format=log_format,
            )
        )
    )
    settings_or_exit(lambda: settings.check_security(settings.host))
    if settings.auth_mode == "mtls":
        settings_or_exit(lambda: check_files(settings.tls_paths("backend")))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(
        json=settings.log_format == "json", level=settings.log_level, fields={"service": "backend"}
    )
    settings_or_exit(lambda: tracing.configure("workfleet-backend"))  # on only by OTEL_*
    _warn_if_open(settings.auth_mode)
    asyncio.run(serve_backend(settings, orchestrator_type=_test_break()))


def worker(
    worker_type: str | None = typer.Option(
        None, "--type", help="backtesting or training [env WORKFLEET_WORKER_TYPE]"
    ),
    backend_url: str | None = typer.Option(None, help="Backend URL [env WORKFLEET_BACKEND_URL]"),
    worker_id: str | None = typer.Option(
        None, help="Worker id [env WORKFLEET_WORKER_ID; hostname-type]"
    ),
    slots: int | None = typer.Option(None, help="Operations run at once [env WORKFLEET_SLOTS; 1]"),
    label: list[str] | None = typer.Option(
        None,
        "--label",
        help="A label k=v operations may select on; repeat for several "
        "[env WORKFLEET_LABELS as k=v,k=v]",
        show_default=False,
    ),
    speed: float | None = typer.Option(
        None,
        help="Test workloads (diagnostic sleep, cpu) take seconds / speed here, so one machine "
        "can stand for a slow and a fast worker [env WORKFLEET_SPEED; 1.0]",
    ),
    host: str | None = typer.Option(None, help="Bind address [127.0.0.1]"),
    port: int | None = typer.Option(
        None, help="Port (0 = any free port) [5003 backtesting, 5002 training]"
    ),
    advertise_url: str | None = typer.Option(
        None, help="URL the backend uses to reach this worker"
    ),
    auth_mode: AuthMode | None = typer.Option(
        None, help="none (loopback only), token or mtls [env WORKFLEET_AUTH_MODE; token]"
    ),
    tls_cert: Path | None = TlsCert,
    tls_key: Path | None = TlsKey,
    tls_ca: Path | None = typer.Option(
        None,
        "--tls-ca",
        "--ca-file",
        help="mtls: CA bundle, the only roots trusted [env WORKFLEET_TLS_CA; <data-dir>/pki/]",
    ),
    bootstrap_token: str | None = typer.Option(
        None,
        help="mtls: enroll with this one-time token (from `workfleet certs bootstrap-token`) "
        "when the worker has no certificate yet [env WORKFLEET_BOOTSTRAP_TOKEN]",
        show_default=False,
    ),
    data_dir: Path | None = typer.Option(None, help="Data directory [env WORKFLEET_DATA_DIR]"),
    log_format: LogFormat | None = typer.Option(None, help="json or console"),
) -> None:
    """Run a worker: registers itself with the backend and runs what it is sent."""
    settings = settings_or_exit(
        lambda: WorkerSettings(
            **given(
                worker_type=worker_type,
                backend_url=backend_url,
                worker_id=worker_id,
                slots=slots,
                labels=",".join(label) if label else None,  # checked as WORKFLEET_LABELS is
                speed=speed,
                host=host,
                port=port,
                advertise_url=advertise_url,
                auth_mode=auth_mode,
                tls_cert=tls_cert,
                tls_key=tls_key,
                tls_ca=tls_ca,
                bootstrap_token=bootstrap_token,
                data_dir=data_dir,
                log_format=log_format,
            )
        )
    )
    settings_or_exit(lambda: settings.check_security(settings.host))
    settings_or_exit(lambda: offered_operation_types(settings.worker_type))
    configure_logging(  # before enrolling: its lines are JSON too
        json=settings.log_format == "json",
        level=settings.log_level,
        fields={
            "service": "worker",
            "worker_id": settings.resolved_worker_id(),
            "worker_type": settings.worker_type,
        },
    )
    if settings.auth_mode == "mtls":
        settings_or_exit(lambda: enroll_if_needed(settings))
        settings_or_exit(lambda: check_files(own_paths(settings)))
    worker_id = settings.resolved_worker_id()
    settings_or_exit(lambda: tracing.configure("workfleet-worker", instance_id=worker_id))
    _warn_if_open(settings.auth_mode)
    asyncio.run(serve_worker(settings))


def _test_break() -> type[Orchestrator]:
    """The real orchestrator, unless the checker's self-test asks for a broken one (read once,
    here: the production path pays nothing per request)."""
    mode = os.environ.get(broken.ENV)
    if not mode:
        return Orchestrator
    try:
        chosen = broken.broken_orchestrator(mode)
    except ValueError as exc:
        fail(str(exc), 2)
    log.warning(
        "backend_deliberately_broken",
        mode=mode,
        detail=f"{broken.ENV} is set: this backend breaks its guarantees on purpose, for the "
        "ledger checker's self-test only: " + " ".join((chosen.__doc__ or "").split()),
    )
    return chosen


def _warn_if_open(mode: AuthMode) -> None:
    if mode == "none":
        typer.secho(
            "WARNING: --auth-mode none: no authentication at all; loopback only. "
            "Never use it on a shared machine.",
            fg="red",
            err=True,
            bold=True,
        )
