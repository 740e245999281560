from typing import Any

from fastapi import APIRouter, Request, Response

from workfleet import __version__
from workfleet.backend.deps import OrchestratorDep, Reader, Scraper
from workfleet.observability.discovery import prometheus_targets
from workfleet.observability.metrics import BackendMetrics, exposition
from workfleet.protocol import BackendHealth

router = APIRouter(tags=["system"])


@router.get("/health", response_model=BackendHealth)
async def health() -> BackendHealth:
    """Public liveness: says nothing about the fleet."""
    return BackendHealth(version=__version__)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, _: Scraper) -> Response:
    """Prometheus exposition: OpenMetrics (with trace exemplars) when asked for, else text."""
    backend_metrics: BackendMetrics = request.app.state.metrics
    body, content_type = exposition(backend_metrics.registry, request.headers.get("accept", ""))
    return Response(body, media_type=content_type)


@router.get("/api/v1/prometheus/targets")
async def prometheus_service_discovery(
    _: Scraper, orchestrator: OrchestratorDep
) -> list[dict[str, Any]]:
    """Prometheus HTTP service discovery: every registered worker as a scrape target."""
    return prometheus_targets(orchestrator.workers.values())


@router.get("/api/v1/openapi.json")
async def openapi(request: Request, _: Reader) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi()
    return schema
