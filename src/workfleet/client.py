"""A typed async client of the backend API (the CLI, tests and benchmarks use it)."""

import hashlib
import ssl
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from workfleet.protocol import (
    ArtifactsPage,
    AuditPage,
    DatasetsPage,
    DatasetView,
    KeyCreated,
    KeysPage,
    KeyView,
    OperationBatchCreate,
    OperationBatchItem,
    OperationCreate,
    OperationsAccepted,
    OperationsPage,
    OperationView,
    RequirementsModel,
    WorkersPage,
    WorkerView,
)


class ApiError(Exception):
    def __init__(self, status: int, detail: str, retry_after: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class BackendUnreachable(Exception):
    pass


class Client:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls`: for an https backend, a context trusting its CA (and maybe presenting a
        client certificate); see `security.tls.client_context`."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

        def pool(connections: int) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=base_url.rstrip("/"),
                headers=headers,
                timeout=timeout_s,
                trust_env=False,
                transport=transport,
                limits=httpx.Limits(max_connections=connections),
                verify=tls if tls is not None else True,
            )

        # httpx's pool costs grow with its connection count, so short requests share a few
        # connections; long polls get their own pool so they never hold those up.
        self._http = pool(16)
        self._long = pool(256)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()
        await self._long.aclose()

    async def _call(
        self, method: str, path: str, *, long_poll: bool = False, **kwargs: Any
    ) -> httpx.Response:
        http = self._long if long_poll else self._http
        try:
            response = await http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise BackendUnreachable(
                f"cannot reach the backend at {self._http.base_url}: {exc}"
            ) from exc
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, str(detail), response.headers.get("Retry-After"))
        return response

    async def submit(
        self,
        operation_type: str,
        params: dict[str, Any] | None = None,
        *,
        priority: int = 0,
        requirements: RequirementsModel | None = None,
        idempotency_key: str | None = None,
    ) -> OperationView:
        body = OperationCreate(
            operation_type=operation_type,
            params=params or {},
            priority=priority,
            requirements=requirements or RequirementsModel(),
        )
        key = idempotency_key or uuid.uuid4().hex  # safe to retry a submit that timed out
        response = await self._call(
            "POST",
            "/api/v1/operations",
            content=body.model_dump_json(),
            headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        )
        return OperationView.model_validate_json(response.content)

    async def submit_many(
        self, operations: Sequence[tuple[str, dict[str, Any]]], *, chunk: int = 500
    ) -> list[OperationView]:
        """Submit (operation_type, params) pairs in batches of `chunk` per request."""
        accepted: list[OperationView] = []
        for start in range(0, len(operations), chunk):
            items = [
                OperationBatchItem(
                    operation_type=kind, params=params, idempotency_key=uuid.uuid4().hex
                )
                for kind, params in operations[start : start + chunk]
            ]
            body = OperationBatchCreate(operations=items)
            response = await self._call(
                "POST",
                "/api/v1/operations/batch",
                content=body.model_dump_json(),
                headers={"Content-Type": "application/json"},
            )
            accepted += OperationsAccepted.model_validate_json(response.content).items
        return accepted

    async def get(self, operation_id: str, *, wait_s: float = 0) -> OperationView:
        params = {"wait": wait_s} if wait_s else None
        response = await self._call(
            "GET",
            f"/api/v1/operations/{operation_id}",
            long_poll=wait_s > 0,
            params=params,
            timeout=wait_s + 30,
        )
        return OperationView.model_validate_json(response.content)

    async def wait(self, operation_id: str, *, timeout_s: float = 3600) -> OperationView:
        """Until the operation is final (long polls of up to 30 s each)."""
        remaining = timeout_s
        while True:
            op = await self.get(operation_id, wait_s=min(30.0, max(remaining, 0.0)))
            if op.status in ("completed", "failed", "cancelled") or remaining <= 0:
                return op
            remaining -= 30.0

    async def list(
        self,
        *,
        status: Sequence[str] = (),
        operation_type: str | None = None,
        worker_id: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> OperationsPage:
        params: dict[str, Any] = {"limit": limit, "status": list(status)}
        for name, value in (
            ("operation_type", operation_type),
            ("worker_id", worker_id),
            ("owner", owner),
            ("cursor", cursor),
        ):
            if value is not None:
                params[name] = value
        response = await self._call("GET", "/api/v1/operations", params=params)
        return OperationsPage.model_validate_json(response.content)

    async def cancel(self, operation_id: str) -> OperationView:
        response = await self._call("POST", f"/api/v1/operations/{operation_id}/cancel")
        return OperationView.model_validate_json(response.content)

    async def workers(self) -> WorkersPage:
        return WorkersPage.model_validate_json((await self._call("GET", "/api/v1/workers")).content)

    async def worker(self, worker_id: str) -> WorkerView:
        response = await self._call("GET", f"/api/v1/workers/{worker_id}")
        return WorkerView.model_validate_json(response.content)

    async def drain(self, worker_id: str, *, undo: bool = False) -> WorkerView:
        action = "undrain" if undo else "drain"
        response = await self._call("POST", f"/api/v1/workers/{worker_id}/{action}")
        return WorkerView.model_validate_json(response.content)

    async def put_dataset(self, symbol: str, timeframe: str, csv: bytes) -> DatasetView:
        response = await self._call(
            "PUT",
            f"/api/v1/datasets/{symbol}/{timeframe}",
            content=csv,
            headers={"Content-Type": "text/csv"},
            timeout=600,
        )
        return DatasetView.model_validate_json(response.content)

    async def datasets(self) -> DatasetsPage:
        return DatasetsPage.model_validate_json(
            (await self._call("GET", "/api/v1/datasets")).content
        )

    async def artifacts(self, operation_id: str) -> ArtifactsPage:
        response = await self._call("GET", f"/api/v1/operations/{operation_id}/artifacts")
        return ArtifactsPage.model_validate_json(response.content)

    async def artifact(self, operation_id: str, name: str) -> bytes:
        """The bytes, checked against the SHA-256 the backend recorded."""
        response = await self._call(
            "GET", f"/api/v1/operations/{operation_id}/artifacts/{name}", timeout=600
        )
        expected = response.headers.get("X-Content-SHA256", "")
        if hashlib.sha256(response.content).hexdigest() != expected:
            raise ApiError(502, f"artifact {name} arrived damaged (its SHA-256 does not match)")
        return response.content

    async def create_key(self, role: str, name: str) -> KeyCreated:
        response = await self._call("POST", "/api/v1/keys", json={"role": role, "name": name})
        return KeyCreated.model_validate_json(response.content)

    async def keys(self) -> KeysPage:
        return KeysPage.model_validate_json((await self._call("GET", "/api/v1/keys")).content)

    async def revoke_key(self, key_id: str) -> KeyView:
        response = await self._call("POST", f"/api/v1/keys/{key_id}/revoke")
        return KeyView.model_validate_json(response.content)

    async def metrics(self) -> str:
        return (await self._call("GET", "/metrics")).text

    async def audit(self, *, after_seq: int = 0, limit: int = 500) -> AuditPage:
        """One page of the audit log, in chain order after `after_seq` (admin keys only)."""
        params = {"after_seq": after_seq, "limit": limit}
        response = await self._call("GET", "/api/v1/audit", params=params)
        return AuditPage.model_validate_json(response.content)
