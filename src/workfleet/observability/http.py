"""HTTP RED metrics and the access log, by route TEMPLATE (`/api/v1/operations/{operation_id}`),
never the raw path: the label set stays bounded whatever callers send, and no query string
(or anything else a caller put in the URL) reaches a label or a log line.

A pure ASGI middleware (no BaseHTTPMiddleware: no extra task, no body buffering, streaming
responses stay streaming). The route is read from `scope["route"]` after the app has routed the
request: Starlette's router writes it into the very scope dict passed down.
"""

import time
from collections.abc import Callable
from typing import Any, Final

import structlog
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workfleet.observability.correlation import trace_exemplar

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED: Final = "unmatched"  # no route: a 404 for a path nobody serves
# polled by machines: logged at DEBUG, so INFO logs hold what people did
QUIET_ROUTES: Final = frozenset({"/health", "/livez", "/metrics"})
LOGGED_PATH_PARAMS: Final = ("operation_id", "worker_id")

access_log = structlog.get_logger("workfleet.access")

# (method, route template, status code, seconds, exemplar or None)
Observe = Callable[[str, str, int, float, dict[str, str] | None], None]


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    if isinstance(route, Mount):
        return str(route.path) or "/"
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else UNMATCHED


def bounded_method(method: str) -> str:
    return method if method in METHODS else "other"


class HttpObservability:
    """Counts and times each request (`observe`, optional: a worker only logs) and writes one
    access line: method, route template, status, duration_s, and the operation or worker id
    when the route names one."""

    def __init__(self, app: ASGIApp, *, observe: Observe | None = None) -> None:
        self.app = app
        self._observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # if the app raises before it answers, the server answers 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - began
            method = bounded_method(str(scope.get("method", "")))
            route = route_template(scope)
            if self._observe is not None:
                self._observe(method, route, status, seconds, trace_exemplar())
            _log_access(scope, method, route, status, seconds)


def _log_access(scope: Scope, method: str, route: str, status: int, seconds: float) -> None:
    ids: dict[str, Any] = {
        name: value
        for name, value in (scope.get("path_params") or {}).items()
        if name in LOGGED_PATH_PARAMS
    }
    write = access_log.debug if route in QUIET_ROUTES and status < 400 else access_log.info
    write(
        "http_request",
        method=method,
        route=route,
        status=status,
        duration_s=round(seconds, 6),
        **ids,
    )
