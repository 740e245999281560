"""`workfleet backend`: the API, registry, health monitor and scheduler in one process."""

import asyncio
import os
from pathlib import Path

import structlog
import typer

from workfleet.backend.app import create_app
from workfleet.backend.orchestrator import Orchestrator
from workfleet.cli.common import fail, given, settings_or_exit
from workfleet.cli.servers import (
    TlsCa,
    TlsCert,
    TlsKey,
    reload_failure_counter,
    server_tls,
    until_started,
    warn_if_open,
    watch,
)
from workfleet.harness import broken
from workfleet.observability import tracing
from workfleet.observability.logging import configure_logging
from workfleet.security.tls import check_files
from workfleet.serving import AppServer, server_config
from workfleet.settings import AuthMode, BackendSettings, LogFormat, Placement

log = structlog.get_logger(__name__)


async def serve_backend(
    settings: BackendSettings,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    orchestrator_type: type[Orchestrator] = Orchestrator,
) -> None:
    app = create_app(settings, orchestrator_type=orchestrator_type)
    # clients may come with an API key and no certificate; workers prove their identity
    tls = server_tls(
        settings,
        settings.tls_paths("backend"),
        require_client_cert=False,
        on_failure=reload_failure_counter(app),
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
    await until_started(server, serving)
    watching = watch(tls, settings.tls_reload_interval_s)
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
    warn_if_open(settings.auth_mode)
    asyncio.run(serve_backend(settings, orchestrator_type=_test_break()))


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
