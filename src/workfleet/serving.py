"""Running an app on uvicorn with a hook that runs before the listener closes (a worker drains
there, while it still answers health checks; the backend releases held sessions there)."""

import asyncio
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import FastAPI

from workfleet.security.identity import DEFAULT_TRUST_DOMAIN
from workfleet.security.tls import ReloadingServerTls, identify_peers, peer_protocol


class AppServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        *,
        before_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config)
        self._before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        if self._before_shutdown is not None:
            await self._before_shutdown()
        await super().shutdown(sockets=sockets)  # type: ignore[arg-type]


# Idle connections stay open this long: above the backend's pool keep-alive towards workers
# (backend.gateway), itself above the health interval, so each health check reuses a connection
# (in mtls: no handshake per check) and the pool never sends on a connection being closed.
KEEP_ALIVE_S = 75


def server_config(
    app: FastAPI,
    host: str,
    port: int,
    *,
    tls: ReloadingServerTls | None = None,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    graceful_s: int = 5,
) -> uvicorn.Config:
    """`tls` (mtls): serve https with that context, each caller's certificate identity in
    `request.state.peer`. `graceful_s`: how long closing connections may take at shutdown
    (idle TLS keep-alives wait for a close_notify their pooled clients never send)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # our structlog setup owns logging
        access_log=False,
        timeout_graceful_shutdown=graceful_s,
        timeout_keep_alive=KEEP_ALIVE_S,
        loop="uvloop",
        http="httptools" if tls is None else peer_protocol(identify_peers(trust_domain)),
        ssl_context_factory=None if tls is None else lambda _config, _default: tls.listener,
        lifespan="on",
    )


async def wait_started(server: uvicorn.Server, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not server.started:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("server did not start")
        await asyncio.sleep(0.01)


def bound_port(server: uvicorn.Server) -> int:
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("server has no socket")
