from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import FileResponse

from workfleet.backend.artifacts import ArtifactService
from workfleet.backend.deps import Fetcher, OrchestratorDep, Reader, WorkerCaller, check_holds
from workfleet.domain.artifacts import Artifact
from workfleet.domain.operations import Lease
from workfleet.protocol import ArtifactsPage, ArtifactView

router = APIRouter(prefix="/api/v1/operations/{operation_id}/artifacts", tags=["artifacts"])
MAX_ARTIFACT_BYTES = 1 << 30


async def _service(request: Request) -> ArtifactService:
    service: ArtifactService = request.app.state.artifacts
    return service


Artifacts = Annotated[ArtifactService, Depends(_service)]


def _view(artifact: Artifact) -> ArtifactView:
    return ArtifactView.model_validate(artifact, from_attributes=True)


@router.put(
    "/{name}",
    response_model=ArtifactView,
    max_body_size=MAX_ARTIFACT_BYTES,
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}}},
)
async def put_artifact(
    operation_id: str,
    name: str,
    request: Request,
    artifacts: Artifacts,
    orchestrator: OrchestratorDep,
    caller: WorkerCaller,
    lease_attempt: Annotated[int, Header(alias="X-Lease-Attempt", ge=1)],
    lease_token: Annotated[str, Header(alias="X-Lease-Token", min_length=8, max_length=128)],
) -> ArtifactView:
    """Only the attempt holding the current lease may upload (else 409)."""
    check_holds(caller, orchestrator, operation_id)
    lease = Lease(lease_attempt, lease_token)
    return _view(await artifacts.put(operation_id, lease, name, await request.body()))


@router.get("", response_model=ArtifactsPage)
async def list_artifacts(operation_id: str, artifacts: Artifacts, _: Reader) -> ArtifactsPage:
    return ArtifactsPage(items=[_view(a) for a in await artifacts.list(operation_id)])


@router.get("/{name}", response_class=FileResponse)
async def get_artifact(
    operation_id: str, name: str, artifacts: Artifacts, _: Fetcher
) -> FileResponse:
    """The bytes; `X-Content-SHA256` says what they must hash to."""
    artifact = await artifacts.get(operation_id, name)
    return FileResponse(
        artifacts.path_of(artifact.sha256),
        media_type="application/octet-stream",
        filename=artifact.name,
        headers={"X-Content-SHA256": artifact.sha256},
    )
