from typing import Any

from fastapi import APIRouter, Request, Response

from workfleet import __version__
from workfleet.backend.deps import Reader, Scraper
from workfleet.observability.metrics import CONTENT_TYPE, BackendMetrics
from workfleet.protocol import BackendHealth

router = APIRouter(tags=["system"])


@router.get("/health", response_model=BackendHealth)
async def health() -> BackendHealth:
    """Public liveness: says nothing about the fleet."""
    return BackendHealth(version=__version__)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, _: Scraper) -> Response:
    backend_metrics: BackendMetrics = request.app.state.metrics
    return Response(backend_metrics.render(), media_type=CONTENT_TYPE)


@router.get("/api/v1/openapi.json")
async def openapi(request: Request, _: Reader) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi()
    return schema
