"""create_app: the backend as an ASGI app, with everything it needs passed in."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import structlog
from fastapi import FastAPI

from workfleet import __version__
from workfleet.api_errors import map_domain_errors
from workfleet.backend.artifacts import ArtifactService
from workfleet.backend.audit import DIRECTORY as AUDIT_DIRECTORY
from workfleet.backend.audit import AuditLog
from workfleet.backend.auth import Authenticator, IssuedCertificates
from workfleet.backend.datasets import DatasetService
from workfleet.backend.dispatcher import Dispatcher
from workfleet.backend.enrollment import Enrollment
from workfleet.backend.gateway import HttpWorkerGateway, WorkerGateway
from workfleet.backend.health import HealthMonitor
from workfleet.backend.orchestrator import Orchestrator, OrchestratorConfig, utc_now
from workfleet.backend.routes import (
    artifacts,
    audit,
    certificates,
    datasets,
    keys,
    operations,
    system,
    ui,
    workers,
)
from workfleet.backend.sessions import SessionHub
from workfleet.domain.throttle import FailureThrottle
from workfleet.domain.workers import LivenessPolicy
from workfleet.observability import tracing
from workfleet.observability.http import HttpObservability
from workfleet.observability.metrics import BackendMetrics
from workfleet.operations.registry import load_operation_types
from workfleet.request_ids import RequestIds
from workfleet.security.tls import client_context
from workfleet.security.tokens import auth_header
from workfleet.settings import BackendSettings
from workfleet.store.base import Store
from workfleet.store.sql import SqlStore

log = structlog.get_logger(__name__)
MAX_BODY_BYTES = 32 << 20  # JSON bodies; dataset uploads have their own, larger limit


def create_app(
    settings: BackendSettings,
    *,
    store: Store | None = None,
    gateway: WorkerGateway | None = None,
    clock: Callable[[], datetime] = utc_now,
    orchestrator_type: type[Orchestrator] = Orchestrator,
) -> FastAPI:
    """`orchestrator_type`: another only for the checker's self-test (harness/broken.py)."""
    store = store or SqlStore(settings.resolved_database_url(), sync=settings.db_sync)
    mtls = settings.auth_mode == "mtls"
    tls = settings.tls_paths("backend") if mtls else None
    gateway = gateway or HttpWorkerGateway(
        headers={} if mtls else auth_header(settings.cluster_secrets),
        dispatch_timeout_s=settings.dispatch_timeout_s,
        tls=client_context(tls.ca, tls) if tls is not None else None,
        trust_domain=settings.trust_domain,
    )
    metrics = BackendMetrics()
    if tls is not None:
        metrics.watch_certificates(tls)
    config = OrchestratorConfig(
        liveness=LivenessPolicy(settings.health_failure_threshold, settings.worker_removal_s),
        max_losses=settings.max_losses,
        max_pending=settings.max_pending,
        max_unfinished_per_owner=settings.max_unfinished_per_owner,
        dispatch_timeout_s=settings.dispatch_timeout_s,
        placement=settings.placement,
        aging_interval_s=settings.aging_interval_s,
    )
    orchestrator = orchestrator_type(
        store,
        gateway,
        operation_types=load_operation_types(),
        config=config,
        metrics=metrics,
        clock=clock,
    )
    monitor = HealthMonitor(
        orchestrator,
        gateway,
        interval_s=settings.health_interval_s,
        timeout_s=settings.health_timeout_s,
        probe_timeout_s=settings.probe_timeout_s,
        concurrency=settings.health_concurrency,
    )

    audit_log = AuditLog(
        store,
        settings.data_dir / AUDIT_DIRECTORY,
        clock,
        checkpoint_every=settings.audit_checkpoint_every,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        await audit_log.start()
        dispatcher = Dispatcher(orchestrator, gateway)
        await orchestrator.start()
        loops = [
            _loop(dispatcher.run),
            _loop(monitor.run),
            _loop(
                lambda: _every(settings.progress_persist_interval_s, orchestrator.flush_progress)
            ),
        ]
        log.info("backend_started", version=__version__, auth_mode=settings.auth_mode)
        try:
            yield
        finally:
            app.state.sessions.close()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await orchestrator.stop()
            await audit_log.close()  # after everything that may still record, before the store
            await gateway.close()
            await store.close()
            log.info("backend_stopped")

    app = FastAPI(
        max_body_size=MAX_BODY_BYTES,
        title="workfleet",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.orchestrator = orchestrator
    app.state.metrics = metrics
    app.state.enrollment = (
        Enrollment(settings.data_dir, timedelta(seconds=settings.worker_cert_lifetime_s), clock)
        if mtls
        else None
    )
    app.state.throttle = FailureThrottle(
        limit=settings.auth_failure_limit, window_s=settings.auth_failure_window_s
    )
    app.state.audit = audit_log
    orchestrator.audit = audit_log
    app.state.authenticator = Authenticator(
        settings.auth_mode,
        settings.cluster_secrets,
        store,
        certificates=IssuedCertificates(settings.data_dir / "pki") if mtls else None,
    )
    app.state.sessions = SessionHub(on_drop=monitor.probe_soon)
    app.state.datasets = DatasetService(store, settings.data_dir / "datasets", clock)
    app.state.artifacts = ArtifactService(
        store, settings.data_dir / "artifacts", clock, orchestrator.check_lease
    )
    orchestrator.on_worker_removed = app.state.sessions.end
    for router in (
        operations.router,
        artifacts.router,
        workers.router,
        datasets.router,
        keys.router,
        audit.router,
        certificates.router,
        system.router,
        ui.router,
    ):
        app.include_router(router)
    map_domain_errors(app)
    # inside RequestIds: its access lines carry the request id
    app.add_middleware(HttpObservability, observe=metrics.http_request)
    app.add_middleware(RequestIds)
    tracing.instrument_app(app)  # tracing on (OTEL_*, set up by the CLI): server spans
    return app


def _loop(run: Callable[[], Coroutine[Any, Any, None]]) -> "asyncio.Task[None]":
    async def _forever() -> None:
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one loop must not silently stop it
                log.exception("background_loop_crashed", loop=getattr(run, "__qualname__", "?"))
                await asyncio.sleep(0.5)

    return asyncio.create_task(_forever())


async def _every(interval_s: float, tick: Callable[[], Coroutine[Any, Any, None]]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        with contextlib.suppress(Exception):
            await tick()
