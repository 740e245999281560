from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response

from workfleet.backend.admission import Submission
from workfleet.backend.deps import (
    Canceller,
    OrchestratorDep,
    Reader,
    Submitter,
    WorkerCaller,
    check_holds,
)
from workfleet.backend.views import operation_view
from workfleet.domain.audit import actor_of
from workfleet.domain.operations import ErrorInfo, Lease, OperationStatus, Requirements
from workfleet.protocol import (
    Ack,
    CompletionReport,
    LegacyStartResponse,
    OperationBatchCreate,
    OperationCreate,
    OperationsAccepted,
    OperationsPage,
    OperationView,
    ProgressReport,
)
from workfleet.store.base import MAX_PAGE, OperationQuery

router = APIRouter(prefix="/api/v1", tags=["operations"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=256)]


@router.post("/operations", status_code=202, response_model=OperationView)
async def submit(
    body: OperationCreate,
    orchestrator: OrchestratorDep,
    caller: Submitter,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> OperationView:
    op, created = await orchestrator.submit(
        _submission(body),
        owner=caller.name,
        idempotency_key=idempotency_key,
        actor=actor_of(caller),
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return operation_view(op)


@router.post("/operations/batch", status_code=202, response_model=OperationsAccepted)
async def submit_batch(
    body: OperationBatchCreate, orchestrator: OrchestratorDep, caller: Submitter
) -> OperationsAccepted:
    """Many submits in one request: validated all or nothing, then each accepted durably."""
    submissions = [(_submission(item), item.idempotency_key) for item in body.operations]
    ops = await orchestrator.submit_many(submissions, owner=caller.name, actor=actor_of(caller))
    return OperationsAccepted(items=[operation_view(op) for op in ops])


def _submission(body: OperationCreate) -> Submission:
    return Submission(
        operation_type=body.operation_type,
        params=body.params,
        priority=body.priority,
        requirements=Requirements(**body.requirements.model_dump()),
    )


@router.get("/operations", response_model=OperationsPage)
async def list_operations(
    orchestrator: OrchestratorDep,
    _: Reader,
    status: Annotated[list[OperationStatus] | None, Query()] = None,
    operation_type: str | None = None,
    worker_id: str | None = None,
    owner: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^\d+$")] = None,
) -> OperationsPage:
    query = OperationQuery(frozenset(status or ()), operation_type, worker_id, owner, limit, cursor)
    items, next_cursor = await orchestrator.list_operations(query)
    return OperationsPage(items=[operation_view(op) for op in items], next_cursor=next_cursor)


@router.get("/operations/{operation_id}", response_model=OperationView)
async def get_operation(
    operation_id: str,
    orchestrator: OrchestratorDep,
    _: Reader,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for a final state")] = 0,
) -> OperationView:
    return operation_view(await orchestrator.wait(operation_id, wait))


@router.post("/operations/{operation_id}/cancel", response_model=OperationView)
async def cancel(
    operation_id: str, orchestrator: OrchestratorDep, caller: Canceller, response: Response
) -> OperationView:
    op = await orchestrator.cancel(operation_id, by=caller)
    response.status_code = 200 if op.is_terminal else 202
    return operation_view(op)


@router.post("/operations/{operation_id}/progress", response_model=Ack)
async def report_progress(
    operation_id: str, body: ProgressReport, orchestrator: OrchestratorDep, caller: WorkerCaller
) -> Ack:
    check_holds(caller, orchestrator, operation_id)
    progress = body.progress.model_dump(mode="json", exclude_none=True) if body.progress else None
    await orchestrator.report_progress(
        operation_id,
        Lease(body.lease.attempt, body.lease.token),
        progress,
        started_at=body.started_at,
    )
    return Ack()


@router.post("/operations/{operation_id}/complete", response_model=Ack)
async def report_completion(
    operation_id: str, body: CompletionReport, orchestrator: OrchestratorDep, caller: WorkerCaller
) -> Ack:
    check_holds(caller, orchestrator, operation_id)
    await orchestrator.report_completion(
        operation_id,
        Lease(body.lease.attempt, body.lease.token),
        body.outcome,
        result=body.result,
        error=ErrorInfo(**body.error.model_dump()) if body.error else None,
        started_at=body.started_at,
        progress=body.progress.model_dump(mode="json", exclude_none=True)
        if body.progress
        else None,
    )
    return Ack()


async def _legacy_start(
    operation_type: str, params: dict[str, Any], orchestrator: OrchestratorDep, caller: Submitter
) -> LegacyStartResponse:
    op, _ = await orchestrator.submit(
        Submission(operation_type, params), owner=caller.name, actor=actor_of(caller)
    )
    return LegacyStartResponse(
        success=True,
        operation_id=op.operation_id,
        status="started",
        message=f"{operation_type} operation queued",
    )


@router.post("/backtests/start", status_code=202, response_model=LegacyStartResponse)
async def start_backtest(
    params: Annotated[dict[str, Any], Body()], orchestrator: OrchestratorDep, caller: Submitter
) -> LegacyStartResponse:
    """Seed-compatible alias of POST /operations with operation_type `backtesting`."""
    return await _legacy_start("backtesting", params, orchestrator, caller)


@router.post("/training/start", status_code=202, response_model=LegacyStartResponse)
async def start_training(
    params: Annotated[dict[str, Any], Body()], orchestrator: OrchestratorDep, caller: Submitter
) -> LegacyStartResponse:
    """Seed-compatible alias of POST /operations with operation_type `training`."""
    return await _legacy_start("training", params, orchestrator, caller)
