"""`workfleet worker`: registers itself with the backend and runs what it is sent."""

import asyncio
from pathlib import Path

import typer

from workfleet.cli.common import fail, given, settings_or_exit
from workfleet.cli.servers import (
    TlsCert,
    TlsKey,
    default_url,
    reload_failure_counter,
    server_tls,
    until_started,
    warn_if_open,
    watch,
)
from workfleet.observability import tracing
from workfleet.observability.logging import configure_logging
from workfleet.security.tls import check_files
from workfleet.serving import AppServer, bound_port, server_config
from workfleet.settings import AuthMode, LogFormat, WorkerSettings
from workfleet.worker.app import create_worker_app, drain, offered_operation_types
from workfleet.worker.certificates import enroll_if_needed, own_paths

# a worker has drained (results delivered, deregistered) before its listener closes: what is
# left are the backend's idle keep-alive connections, which need no grace
WORKER_CLOSE_S = 1


async def serve_worker(settings: WorkerSettings) -> None:
    app = create_worker_app(settings)
    tls = server_tls(
        settings,
        own_paths(settings),
        require_client_cert=True,
        on_failure=reload_failure_counter(app),
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
    await until_started(server, serving)
    watch(tls, settings.tls_reload_interval_s)
    scheme = "https" if tls is not None else "http"
    app.state.service.endpoint_url = settings.advertise_url or default_url(
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
    warn_if_open(settings.auth_mode)
    asyncio.run(serve_worker(settings))
