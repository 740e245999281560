"""How the backend calls workers: dispatch, cancel, health. The orchestrator sees only the
WorkerGateway protocol; HttpWorkerGateway is the real one (a small httpx pool per worker)."""

import asyncio
import contextlib
import ssl
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx
from pydantic import ValidationError

from workfleet.domain.operations import Lease
from workfleet.domain.workers import Worker
from workfleet.observability import tracing
from workfleet.protocol import (
    CancelRequest,
    DispatchAccepted,
    DispatchBatch,
    DispatchOutcome,
    DispatchRequest,
    DispatchResults,
    LeaseModel,
    WorkerHealth,
)
from workfleet.security.identity import worker_dns_name
from workfleet.serving import KEEP_ALIVE_S

STALE_CONNECTION = (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)
# a worker gets one batch per dispatch round, plus health checks and cancels; idle connections
# are kept past the health interval and closed before the worker's side closes them
CONNECTIONS_PER_WORKER = httpx.Limits(
    max_connections=32, max_keepalive_connections=4, keepalive_expiry=KEEP_ALIVE_S - 15
)
DispatchKind = Literal["accepted", "refused", "unreachable", "unconfirmed"]


@dataclass(frozen=True, slots=True)
class DispatchResult:
    """accepted: running there. refused/unreachable: certainly not running there.
    unconfirmed: it may be running (timeout after sending, server error)."""

    kind: DispatchKind
    detail: str = ""
    accepted_seq: int | None = None


class HealthCheckFailed(Exception):
    def __init__(self, detail: str, *, refused: bool) -> None:
        super().__init__(detail)
        self.refused = refused  # nothing listens: conclusive on a host that answers


class WorkerGateway(Protocol):
    async def dispatch(self, worker: Worker, request: DispatchRequest) -> DispatchResult: ...

    async def dispatch_many(
        self, worker: Worker, requests: list[DispatchRequest]
    ) -> list[DispatchResult]: ...

    async def cancel(self, worker: Worker, operation_id: str, lease: Lease) -> None: ...

    async def health(self, worker: Worker, *, timeout_s: float) -> WorkerHealth: ...

    def keep_only(self, worker_ids: Collection[str]) -> None:
        """Drop what was kept for any worker not among these (the registry's)."""

    async def close(self) -> None: ...


class HttpWorkerGateway:
    def __init__(
        self,
        *,
        headers: dict[str, str],
        dispatch_timeout_s: float,
        tls: ssl.SSLContext | None = None,
        trust_domain: str | None = None,
    ) -> None:
        """`tls` (mtls): the backend's client context; workers are reached over https only,
        and each must prove its own identity: the TLS server name checked is the DNS name our
        CA puts in that worker's certificate, whatever address the worker registered."""
        self._trust_domain = trust_domain if tls is not None else None
        # one context for every pool (a client given verify=True loads the CA store anew: half
        # a megabyte per worker); token mode calls workers over plain http and never uses it
        self._verify = tls if tls is not None else ssl.create_default_context()
        self._headers = headers
        self._timeout = httpx.Timeout(dispatch_timeout_s, connect=min(dispatch_timeout_s, 3.0))
        # One pool per worker, not one for the fleet: httpcore scans every connection of a pool
        # on each request and release (quadratic in its size, encode/httpcore#1035), so with a
        # shared pool a health check cost 15 ms of CPU among 1,000 workers, 0.7 ms with its own.
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._fresh = httpx.AsyncClient(
            headers=headers,
            limits=httpx.Limits(max_keepalive_connections=0),
            trust_env=False,
            verify=self._verify,
        )

    def _client(self, worker: Worker) -> httpx.AsyncClient:
        client = self._clients.get(worker.worker_id)
        if client is None:
            client = self._clients[worker.worker_id] = self._new_client()
        return client

    def _new_client(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            headers=self._headers,
            timeout=self._timeout,
            limits=CONNECTIONS_PER_WORKER,
            trust_env=False,
            verify=self._verify,
        )
        tracing.instrument_client(client)  # dispatch and cancel (health checks: quiet)
        return client

    def keep_only(self, worker_ids: Collection[str]) -> None:
        """Close the pools of workers that left. Called on every health round too, so a pool
        made by a call still in flight when its worker left (a check, a dispatch, a cancel)
        lives one interval at most."""
        for worker_id in [w for w in self._clients if w not in worker_ids]:
            task = asyncio.get_running_loop().create_task(self._clients.pop(worker_id).aclose())
            self._closing.add(task)  # held: the loop keeps only weak references to tasks
            task.add_done_callback(self._closing.discard)

    def _as(self, worker: Worker) -> dict[str, str]:
        if self._trust_domain is None:
            return {}
        return {"sni_hostname": worker_dns_name(worker.worker_id, self._trust_domain)}

    async def dispatch(self, worker: Worker, request: DispatchRequest) -> DispatchResult:
        url = f"{worker.endpoint_url}/api/v1/operations"
        try:
            response = await self._client(worker).post(
                url,
                content=request.model_dump_json(),
                headers={"Content-Type": "application/json"},
                extensions=self._as(worker),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.InvalidURL) as exc:
            return DispatchResult("unreachable", f"{type(exc).__name__}: {exc}")
        except httpx.HTTPError as exc:
            return DispatchResult("unconfirmed", f"{type(exc).__name__}: {exc}")
        if response.is_success:
            try:
                accepted = DispatchAccepted.model_validate_json(response.content)
            except ValidationError:
                return DispatchResult("unconfirmed", "unreadable acknowledgement")
            return DispatchResult("accepted", accepted_seq=accepted.accepted_seq)
        if response.status_code >= 500:
            return DispatchResult("unconfirmed", f"HTTP {response.status_code}")
        return DispatchResult("refused", f"HTTP {response.status_code}: {response.text[:200]}")

    async def dispatch_many(
        self, worker: Worker, requests: list[DispatchRequest]
    ) -> list[DispatchResult]:
        """Several operations for one worker in one request (when several slots are free)."""
        url = f"{worker.endpoint_url}/api/v1/operations/batch"
        body = DispatchBatch(operations=requests).model_dump_json()
        try:
            response = await self._client(worker).post(
                url,
                content=body,
                headers={"Content-Type": "application/json"},
                extensions=self._as(worker),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.InvalidURL) as exc:
            return [DispatchResult("unreachable", f"{type(exc).__name__}: {exc}")] * len(requests)
        except httpx.HTTPError as exc:
            return [DispatchResult("unconfirmed", f"{type(exc).__name__}: {exc}")] * len(requests)
        try:
            outcomes = DispatchResults.model_validate_json(response.content).results
        except ValidationError:
            kind: DispatchKind = "unconfirmed" if response.status_code >= 500 else "refused"
            return [DispatchResult(kind, f"HTTP {response.status_code}")] * len(requests)
        by_id = {o.operation_id: o for o in outcomes}
        return [_result_of(by_id.get(r.operation_id)) for r in requests]

    async def cancel(self, worker: Worker, operation_id: str, lease: Lease) -> None:
        body = CancelRequest(lease=LeaseModel(attempt=lease.attempt, token=lease.token))
        url = f"{worker.endpoint_url}/api/v1/operations/{operation_id}/cancel"
        # On failure the next health check reports the operation again and the cancel is re-sent.
        with contextlib.suppress(httpx.HTTPError, httpx.InvalidURL):
            await self._client(worker).post(
                url,
                content=body.model_dump_json(),
                headers={"Content-Type": "application/json"},
                extensions=self._as(worker),
            )

    async def health(self, worker: Worker, *, timeout_s: float) -> WorkerHealth:
        url = f"{worker.endpoint_url}/health"
        try:
            try:
                with tracing.quiet():  # every few seconds per worker: no trace of each
                    response = await self._client(worker).get(
                        url, timeout=timeout_s, extensions=self._as(worker)
                    )
            except STALE_CONNECTION:
                # A pooled connection the worker's death (or restart) closed: ask again on a new
                # one, whose fate (refused or not) is the real answer.
                response = await self._fresh.get(
                    url, timeout=timeout_s, extensions=self._as(worker)
                )
        except (httpx.ConnectError, httpx.InvalidURL) as exc:
            raise HealthCheckFailed(f"connection failed: {exc}", refused=True) from exc
        except httpx.HTTPError as exc:
            raise HealthCheckFailed(f"{type(exc).__name__}: {exc}", refused=False) from exc
        if response.status_code != 200:
            raise HealthCheckFailed(f"HTTP {response.status_code}", refused=False)
        try:
            return WorkerHealth.model_validate_json(response.content)
        except ValidationError as exc:
            raise HealthCheckFailed("unreadable health report", refused=False) from exc

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(client.aclose() for client in clients), *self._closing)
        await self._fresh.aclose()


def _result_of(outcome: DispatchOutcome | None) -> DispatchResult:
    if outcome is None:
        return DispatchResult("unconfirmed", "missing from the answer")
    if outcome.status == 202:
        return DispatchResult("accepted", accepted_seq=outcome.accepted_seq)
    kind: DispatchKind = "unconfirmed" if outcome.status >= 500 else "refused"
    return DispatchResult(kind, f"HTTP {outcome.status}: {outcome.detail}")
