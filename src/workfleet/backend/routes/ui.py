"""The built-in dashboard at /ui: static files, public because they hold no data (the page's
script reads the API with the viewer's own key), and GET /api/v1/stats, the figures it charts."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Final

from fastapi import APIRouter, FastAPI, Request, Response

from workfleet.backend.deps import OrchestratorDep, Reader
from workfleet.backend.fleet_stats import FleetHistory, fleet_stats, sample_forever
from workfleet.domain.errors import NotFound
from workfleet.protocol import FleetStats

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
ASSETS: Final = {
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "views.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


@contextlib.asynccontextmanager
async def _sampling(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan, so the orchestrator has started."""
    history = FleetHistory()
    app.state.fleet_history = history
    sampler = asyncio.create_task(
        sample_forever(history, app.state.orchestrator, app.state.metrics)
    )
    try:
        yield
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


router = APIRouter(lifespan=_sampling)


@router.get("/ui", include_in_schema=False)
def page() -> Response:
    return _static("index.html", "text/html; charset=utf-8")


@router.get("/ui/{name}", include_in_schema=False)
def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:  # only the listed files: nothing else of the package is served
        raise NotFound(f"no dashboard file {name}")
    return _static(name, media_type)


@router.get("/api/v1/stats", response_model=FleetStats, tags=["observability"])
async def stats(request: Request, orchestrator: OrchestratorDep, _: Reader) -> FleetStats:
    """What the dashboard's summary and charts show."""
    return fleet_stats(orchestrator, request.app.state.fleet_history)


def _static(name: str, media_type: str) -> Response:
    body = files("workfleet.backend").joinpath("ui", name).read_bytes()
    return Response(body, media_type=media_type, headers=HEADERS)
