"""A request id per HTTP request: taken from a well-formed `X-Request-ID` (so a caller can
follow its request through our logs and audit records) or made here, returned in the response,
and available to everything the request runs (`current_request_id`)."""

import re
import secrets
from contextvars import ContextVar
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER: Final = "x-request-id"
# a caller's id is echoed and logged: only a short, plain token is taken
ACCEPTED: Final = re.compile(r"[A-Za-z0-9._-]{8,64}")
current_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestIds:
    """Pure ASGI middleware (no per-request task or body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER.encode(), b"").decode("latin-1")
        request_id = given if ACCEPTED.fullmatch(given) else secrets.token_hex(8)
        token = current_request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (HEADER.encode(), request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)
