"""create_worker_app: the worker's HTTP server (called only by the backend), its runner and
its agent. The CLI sets `service.endpoint_url` once the socket is bound, then the agent
registers."""

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import httpx
import psutil
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from workfleet import __version__
from workfleet.api_errors import STATUS_OF, map_domain_errors
from workfleet.domain.errors import Forbidden, Unauthenticated, WorkfleetError
from workfleet.observability import tracing
from workfleet.observability.http import HttpObservability
from workfleet.observability.metrics import WorkerMetrics, exposition
from workfleet.operations.registry import OperationType, load_operation_types, types_for_worker
from workfleet.protocol import (
    CancelRequest,
    CapabilitiesModel,
    DispatchAccepted,
    DispatchBatch,
    DispatchOutcome,
    DispatchRequest,
    DispatchResults,
    WorkerHealth,
    WorkerOperationView,
)
from workfleet.security.identity import IdentityKind, PeerIdentity
from workfleet.security.tls import client_context
from workfleet.security.tokens import auth_header, matches_any
from workfleet.settings import ConfigurationError, WorkerSettings
from workfleet.worker.agent import Agent
from workfleet.worker.artifacts import ArtifactTransfers
from workfleet.worker.certificates import CertificateRenewer, own_paths
from workfleet.worker.datasets import DatasetCache
from workfleet.worker.execution_log import ExecutionLog
from workfleet.worker.reporter import Reporter
from workfleet.worker.runner import Job, JobEvent, Runner
from workfleet.worker.service import Identity, WorkerService

log = structlog.get_logger(__name__)
bearer = HTTPBearer(auto_error=False, description="the cluster secret: only the backend calls here")


async def _service(request: Request) -> WorkerService:  # async: no threadpool hop
    service: WorkerService = request.app.state.service
    return service


def _callers(*kinds: IdentityKind) -> Callable[..., Awaitable[None]]:
    """Only the backend calls a worker (and, for /metrics, monitoring): in mtls mode the
    identity of the caller's certificate says who it is, in token mode the cluster secret."""

    async def authorize(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        settings: WorkerSettings = request.app.state.settings
        if settings.auth_mode == "none":
            return
        if settings.auth_mode == "mtls":
            peer: PeerIdentity | None = getattr(request.state, "peer", None)
            if peer is None:  # the handshake demands a certificate; one without an identity
                raise Unauthenticated("a certificate with a workfleet identity is required")
            if peer.identity.kind not in kinds:
                raise Forbidden(f"the {peer.identity.path} identity may not call this worker")
            return
        secret = credentials.credentials if credentials else None
        if secret is None or not matches_any(secret, settings.cluster_secrets):
            raise Unauthenticated("missing or invalid credential")

    return authorize


Service = Annotated[WorkerService, Depends(_service)]
router = APIRouter(dependencies=[Depends(_callers("backend"))])
scraped = APIRouter(dependencies=[Depends(_callers("backend", "monitoring"))])
public = APIRouter()


@router.post("/api/v1/operations", status_code=202, response_model=DispatchAccepted)
async def dispatch(body: DispatchRequest, service: Service) -> DispatchAccepted:
    return service.accept(body)


@router.post("/api/v1/operations/batch", response_model=DispatchResults)
async def dispatch_batch(body: DispatchBatch, service: Service) -> DispatchResults:
    """Several dispatches at once; each answered as a single dispatch would be."""
    return DispatchResults(results=[_accept_one(service, request) for request in body.operations])


def _accept_one(service: WorkerService, request: DispatchRequest) -> DispatchOutcome:
    try:
        accepted = service.accept(request)
    except WorkfleetError as exc:
        status = next(code for kind, code in STATUS_OF if isinstance(exc, kind))
        return DispatchOutcome(operation_id=request.operation_id, status=status, detail=str(exc))
    return DispatchOutcome(
        operation_id=request.operation_id, status=202, accepted_seq=accepted.accepted_seq
    )


@router.post("/api/v1/operations/{operation_id}/cancel", status_code=202, response_class=Response)
async def cancel(operation_id: str, body: CancelRequest, service: Service) -> Response:
    service.cancel(operation_id, body.lease)
    return Response(status_code=202)


@router.get("/api/v1/operations/{operation_id}", response_model=WorkerOperationView)
async def get_operation(operation_id: str, service: Service) -> WorkerOperationView:
    return service.operation(operation_id)


@router.get("/health", response_model=WorkerHealth)
async def health(service: Service) -> WorkerHealth:
    return service.health()


@scraped.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    worker_metrics: WorkerMetrics = request.app.state.metrics
    body, content_type = exposition(worker_metrics.registry, request.headers.get("accept", ""))
    return Response(body, media_type=content_type)


@public.get("/livez")
async def livez() -> dict[str, str]:
    """Public: says only that the process answers."""
    return {"status": "ok"}


def identity_from(settings: WorkerSettings, operation_types: list[str]) -> Identity:
    memory_gb = settings.memory_gb or round(psutil.virtual_memory().total / 2**30, 1)
    return Identity(
        worker_id=settings.resolved_worker_id(),
        worker_type=settings.worker_type,
        capabilities=CapabilitiesModel(
            cores=settings.cores or psutil.cpu_count() or 1,
            memory_gb=memory_gb,
            slots=settings.slots,
            labels=settings.labels,
            speed=settings.speed,
        ),
        operation_types=operation_types,
    )


def backend_client(settings: WorkerSettings) -> tuple[httpx.AsyncClient, ssl.SSLContext | None]:
    """How this worker calls the backend: with its own certificate (mtls; the context comes
    back too, so a renewed certificate can be loaded into it) or the cluster secret."""
    mtls = settings.auth_mode == "mtls"
    tls = client_context(own_paths(settings).ca, own_paths(settings)) if mtls else None
    client = httpx.AsyncClient(
        base_url=settings.backend_url.rstrip("/"),
        trust_env=False,
        headers={} if mtls else auth_header(settings.cluster_secrets),
        timeout=settings.backend_timeout_s,
        verify=tls if tls is not None else True,
    )
    tracing.instrument_client(client)  # tracing on: reports and fetches carry the traceparent
    return client, tls


def offered_operation_types(worker_type: str) -> dict[str, OperationType]:
    """The operation types a worker of this type runs; ConfigurationError when one of them
    needs something this machine lacks (a training worker without PyTorch)."""
    types = load_operation_types()
    offered = {name: types[name] for name in types_for_worker(types, worker_type)}
    for operation_type in offered.values():
        missing = operation_type.missing_modules()
        if missing:
            raise ConfigurationError(
                f"a {worker_type} worker runs {operation_type.name} operations, which need "
                f"{', '.join(missing)}, not installed here: {operation_type.install_hint}"
            )
    return offered


def create_worker_app(settings: WorkerSettings) -> FastAPI:
    offered = offered_operation_types(settings.worker_type)

    def on_job_event(event: JobEvent) -> None:  # names below are bound before any job runs
        _count(worker_metrics, event)
        service.on_job_event(event)

    async def fetch_dataset(symbol: str, timeframe: str) -> Path:
        cache: DatasetCache = app.state.dataset_cache
        return await cache.path(symbol, timeframe)

    async def fetch_artifact(operation_id: str, name: str) -> Path | None:
        transfers: ArtifactTransfers = app.state.artifacts
        return await transfers.fetch(operation_id, name)

    async def upload_artifact(job: Job, name: str, path: Path) -> None:
        transfers: ArtifactTransfers = app.state.artifacts
        await transfers.upload(job.operation_id, job.lease, name, path)

    runner = Runner(
        settings.slots,
        cancel_grace_s=settings.cancel_grace_s,
        on_event=on_job_event,
        fetch_dataset=fetch_dataset,
        fetch_artifact=fetch_artifact,
        upload_artifact=upload_artifact,
        preload=[module for t in offered.values() if (module := t.module()) is not None],
        speed=settings.speed,
    )
    service = WorkerService(identity_from(settings, sorted(offered)), runner, offered)
    worker_metrics = WorkerMetrics(
        service.state,
        service.cpu_ratio,
        service.memory_ratio,
        operation_types=offered,
        slots=settings.slots,
    )
    if settings.auth_mode == "mtls":
        worker_metrics.watch_certificates(own_paths(settings))
    if settings.execution_log is not None:
        service.execution_log = ExecutionLog(settings.execution_log, service.identity.worker_id)
    endpoint_ready = asyncio.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client, client_tls = backend_client(settings)
        renewing = None
        if client_tls is not None:
            renewer = CertificateRenewer(settings, client, client_tls)
            service.certificate_problem = renewer.problem
            renewing = asyncio.create_task(renewer.run())
        service.reporter = Reporter(
            client,
            service.identity.worker_id,
            progress_interval_s=settings.progress_report_interval_s,
            on_stale=service.abandon,
            on_failure=lambda: worker_metrics.callback_failed("report"),
        )
        service.reporter.start()
        agent = Agent(
            client,
            registration=service.registration,
            on_stop_operations=service.stop_operations,
            backoff_max_s=settings.register_backoff_max_s,
            on_failure=worker_metrics.callback_failed,
        )
        app.state.agent = agent
        app.state.dataset_cache = DatasetCache(client, settings.data_dir / "cache" / "datasets")
        app.state.artifacts = ArtifactTransfers(client, settings.data_dir / "cache" / "artifacts")
        await runner.start()

        async def register_when_bound() -> None:
            await endpoint_ready.wait()
            await agent.run()

        agent_task = asyncio.create_task(register_when_bound())
        app.state.agent_task = agent_task
        try:
            yield
        finally:
            if renewing is not None:
                renewing.cancel()
            agent_task.cancel()
            with contextlib.suppress(BaseException):
                await agent_task
            await service.reporter.close()
            await runner.stop()
            await client.aclose()

    app = FastAPI(
        title="workfleet worker",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = worker_metrics
    app.state.endpoint_ready = endpoint_ready
    app.include_router(router)
    app.include_router(scraped)
    app.include_router(public)
    map_domain_errors(app)
    app.add_middleware(HttpObservability)  # the access log (the backend counts requests)
    tracing.instrument_app(app)  # tracing on (OTEL_*, set up by the CLI): server spans
    return app


def _count(metrics: WorkerMetrics, event: JobEvent) -> None:
    job = event.job
    if event.kind == "started":
        metrics.started(job.operation_type)
    elif event.kind == "progress":
        metrics.progressed(job.operation_type)
    elif event.kind == "finished":
        seconds = None if job.started_at is None else time.time() - job.started_at
        metrics.finished(job.operation_type, event.outcome or "failed", seconds, event.error)


async def drain(app: FastAPI, grace_s: float) -> None:
    """SIGTERM: stop accepting, then `leave`. Runs while the server still answers."""
    service: WorkerService = app.state.service
    agent: Agent | None = getattr(app.state, "agent", None)
    service.draining = True
    worker_id = service.identity.worker_id
    log.info("worker_draining", worker_id=worker_id, running=len(service.runner.jobs))
    if agent is None:
        return
    metrics: WorkerMetrics = app.state.metrics
    handed = await leave(service, agent, grace_s, on_failure=metrics.callback_failed)
    app.state.agent_task.cancel()  # after deregistering: a dropped session would be probed
    log.info("worker_drained", worker_id=worker_id, handed_back=handed)


async def leave(
    service: WorkerService, agent: Agent, grace_s: float, *, on_failure: Callable[[str], None]
) -> int:
    """Announce the drain, let running operations finish (up to the grace), hand back the
    rest, deliver outstanding results, deregister; `on_failure(call)` for a call the backend
    did not answer. Returns how many operations were handed back."""
    service.draining = True
    worker_id = service.identity.worker_id
    try:
        await agent.announce_drain(worker_id)
    except httpx.HTTPError:
        on_failure("drain")
    await service.runner.wait_idle(grace_s)
    handed = service.runner.hand_back()
    if service.reporter is not None:
        for job in handed:
            service.reporter.abandon(job.operation_id)
        await service.reporter.flush(timeout_s=5.0)
    try:
        await agent.deregister(worker_id)
    except httpx.HTTPError:
        on_failure("deregister")
    return len(handed)
