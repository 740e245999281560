"""Self-registration and the session: register (with backoff), then hold one long request open
to the backend. When it ends, the backend restarted, forgot us, or is unreachable: register
again. Registration reports what runs here, so a restarted backend adopts it."""

import asyncio
import random
from collections.abc import Callable

import httpx
import structlog

from workfleet.observability import tracing
from workfleet.protocol import RegistrationAccepted, RunningOperation, WorkerRegistration

log = structlog.get_logger(__name__)
INITIAL_BACKOFF_S = 0.05


class RegistrationRefused(Exception):
    """The backend refused this worker (credentials, or an invalid registration): retrying
    cannot help, so the worker stops with this message."""


class Agent:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        registration: Callable[[], WorkerRegistration],
        on_stop_operations: Callable[[list[RunningOperation]], None],
        backoff_max_s: float,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        """`on_failure(call)`: a call to the backend failed, "register" or "session"."""
        self._client = client
        self._on_failure = on_failure or (lambda _call: None)
        self._registration = registration
        self._on_stop_operations = on_stop_operations
        self._backoff_max_s = backoff_max_s
        self.registered = asyncio.Event()

    async def run(self) -> None:
        backoff = INITIAL_BACKOFF_S
        while True:
            call = "register"
            try:
                await self.register()
                backoff = INITIAL_BACKOFF_S
                call = "session"
                await self._hold_session()
            except httpx.HTTPError as exc:
                self._on_failure(call)
                log.info("backend_unreachable", call=call, error=f"{type(exc).__name__}: {exc}")
            self.registered.clear()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._backoff_max_s)

    async def register(self) -> None:
        body = self._registration()
        response = await self._client.post(
            "/api/v1/workers/register",
            content=body.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code in (401, 403):
            raise RegistrationRefused(
                f"the backend refused this worker's credentials (HTTP {response.status_code}: "
                f"{response_detail(response)}): check WORKFLEET_CLUSTER_TOKEN, or in mtls mode the "
                "worker's certificate"
            )
        if response.status_code in (400, 422):
            raise RegistrationRefused(f"the backend refused the registration: {response.text}")
        response.raise_for_status()
        accepted = RegistrationAccepted.model_validate_json(response.content)
        if accepted.stop_operations:
            self._on_stop_operations(accepted.stop_operations)
        log.info(
            "registered",
            worker_id=body.worker_id,
            reported=len(body.running_operations),
            stop=len(accepted.stop_operations),
        )
        self.registered.set()

    async def _hold_session(self) -> None:
        worker_id = self._registration().worker_id
        timeout = httpx.Timeout(10.0, read=None)  # held open for as long as both sides live
        with tracing.quiet():  # no span open for the worker's lifetime
            async with self._client.stream(
                "GET", f"/api/v1/workers/{worker_id}/session", timeout=timeout
            ) as response:
                if response.status_code == 404:
                    log.info("backend_forgot_worker", worker_id=worker_id)
                    return
                await response.aread()

    async def deregister(self, worker_id: str) -> None:
        response = await self._client.delete(f"/api/v1/workers/{worker_id}")
        if response.status_code not in (204, 404):
            response.raise_for_status()

    async def announce_drain(self, worker_id: str) -> None:
        response = await self._client.post(f"/api/v1/workers/{worker_id}/drain")
        response.raise_for_status()


def response_detail(response: httpx.Response) -> str:
    """The `detail` of an error answer, or its text."""
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]
