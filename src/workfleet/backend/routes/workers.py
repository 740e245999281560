import asyncio

from fastapi import APIRouter, Request, Response

from workfleet.backend.deps import (
    DrainCaller,
    OrchestratorDep,
    Reader,
    WorkerAdmin,
    WorkerCaller,
    check_holds,
)
from workfleet.backend.orchestrator import Orchestrator, Registration
from workfleet.backend.sessions import SessionHub
from workfleet.backend.views import reported, worker_view
from workfleet.domain.errors import Conflict, Forbidden, NotFound
from workfleet.domain.operations import ErrorInfo, Lease
from workfleet.domain.permissions import Principal, check_acts_as
from workfleet.domain.workers import Capabilities
from workfleet.protocol import (
    LeaseModel,
    RegistrationAccepted,
    ReportBatch,
    ReportItem,
    ReportOutcome,
    ReportResults,
    RunningOperation,
    WorkerRegistration,
    WorkersPage,
    WorkerView,
)

router = APIRouter(prefix="/api/v1/workers", tags=["workers"])


@router.post("/register", response_model=RegistrationAccepted)
async def register(
    body: WorkerRegistration, orchestrator: OrchestratorDep, caller: WorkerCaller
) -> RegistrationAccepted:
    check_acts_as(caller, body.worker_id)
    registration = Registration(
        worker_id=body.worker_id,
        worker_type=body.worker_type,
        endpoint_url=body.endpoint_url.rstrip("/"),
        capabilities=Capabilities(**body.capabilities.model_dump()),
        operation_types=frozenset(body.operation_types),
        instance_id=body.instance_id,
        accepted_seq=body.accepted_seq,
        running=reported(body.running_operations),
        key_fingerprint=caller.key_fingerprint,
    )
    worker, stop = await orchestrator.register(registration)
    stops = [
        RunningOperation(
            operation_id=item.operation_id,
            lease=LeaseModel(attempt=item.lease.attempt, token=item.lease.token),
        )
        for item in stop
    ]
    return RegistrationAccepted(
        worker_id=worker.worker_id, status=worker.status, stop_operations=stops
    )


@router.get("/{worker_id}/session", status_code=204, response_class=Response)
async def session(
    worker_id: str, request: Request, orchestrator: OrchestratorDep, caller: WorkerCaller
) -> Response:
    """Held open for as long as the worker lives; 404 tells the worker to register again."""
    check_acts_as(caller, worker_id)
    if not orchestrator.worker_known(worker_id):
        raise NotFound(f"no worker {worker_id}: register first")
    sessions: SessionHub = request.app.state.sessions
    await sessions.hold(worker_id, request)
    return Response(status_code=204)


@router.post("/{worker_id}/reports", response_model=ReportResults)
async def reports(
    worker_id: str, body: ReportBatch, orchestrator: OrchestratorDep, caller: WorkerCaller
) -> ReportResults:
    """Progress and results of many operations in one request (what workers send)."""
    check_acts_as(caller, worker_id)
    statuses = await asyncio.gather(*(_report(orchestrator, item, caller) for item in body.reports))
    return ReportResults(
        results=[
            ReportOutcome(operation_id=item.operation_id, status=status)
            for item, status in zip(body.reports, statuses, strict=True)
        ]
    )


async def _report(orchestrator: Orchestrator, item: ReportItem, caller: Principal) -> int:
    lease = Lease(item.lease.attempt, item.lease.token)
    progress = item.progress.model_dump(mode="json", exclude_none=True) if item.progress else None
    try:
        check_holds(caller, orchestrator, item.operation_id)
        if item.outcome is None:
            await orchestrator.report_progress(
                item.operation_id, lease, progress, started_at=item.started_at
            )
        else:
            await orchestrator.report_completion(
                item.operation_id,
                lease,
                item.outcome,
                result=item.result,
                error=ErrorInfo(**item.error.model_dump()) if item.error else None,
                started_at=item.started_at,
                progress=progress,
            )
    except Conflict:  # a stale lease, or an outcome the operation cannot take
        return 409
    except Forbidden:
        return 403
    except NotFound:
        return 404
    return 200


@router.get("", response_model=WorkersPage)
async def list_workers(orchestrator: OrchestratorDep, _: Reader) -> WorkersPage:
    workers = sorted(orchestrator.workers.values(), key=lambda w: w.worker_id)
    return WorkersPage(items=[worker_view(w) for w in workers])


@router.get("/{worker_id}", response_model=WorkerView)
async def get_worker(worker_id: str, orchestrator: OrchestratorDep, _: Reader) -> WorkerView:
    worker = orchestrator.workers.get(worker_id)
    if worker is None:
        raise NotFound(f"no worker {worker_id}")
    return worker_view(worker)


@router.post("/{worker_id}/drain", response_model=WorkerView)
async def drain(worker_id: str, orchestrator: OrchestratorDep, caller: DrainCaller) -> WorkerView:
    """No new operations go to the worker; running ones finish."""
    check_acts_as(caller, worker_id)
    return worker_view(await orchestrator.set_draining(worker_id, True))


@router.post("/{worker_id}/undrain", response_model=WorkerView)
async def undrain(worker_id: str, orchestrator: OrchestratorDep, _: WorkerAdmin) -> WorkerView:
    return worker_view(await orchestrator.set_draining(worker_id, False))


@router.delete("/{worker_id}", status_code=204, response_class=Response)
async def deregister(
    worker_id: str, orchestrator: OrchestratorDep, caller: DrainCaller
) -> Response:
    """A worker leaving on purpose (SIGTERM); what it still held is queued again."""
    check_acts_as(caller, worker_id)
    await orchestrator.deregister(worker_id)
    return Response(status_code=204)
