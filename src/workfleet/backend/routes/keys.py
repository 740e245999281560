from fastapi import APIRouter, Request

from workfleet.backend.audit import AuditLog
from workfleet.backend.auth import Authenticator, create_key
from workfleet.backend.deps import KeyAdmin, OrchestratorDep
from workfleet.domain.audit import actor_of
from workfleet.domain.errors import NotFound
from workfleet.protocol import KeyCreate, KeyCreated, KeysPage, KeyView
from workfleet.security.api_keys import ApiKey

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


def _view(key: ApiKey) -> KeyView:
    return KeyView(
        key_id=key.key_id,
        name=key.name,
        role=key.role,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


@router.post("", status_code=201, response_model=KeyCreated)
async def create(
    body: KeyCreate, request: Request, orchestrator: OrchestratorDep, principal: KeyAdmin
) -> KeyCreated:
    record, raw = await create_key(orchestrator.store, body.name, body.role, orchestrator.clock)
    audit: AuditLog = request.app.state.audit
    await audit.record(
        actor_of(principal),
        "key.create",
        f"key:{record.key_id}",
        "ok",
        detail={"name": record.name, "role": record.role},  # never the raw key
    )
    return KeyCreated(**_view(record).model_dump(), key=raw)


@router.get("", response_model=KeysPage)
async def list_keys(orchestrator: OrchestratorDep, _: KeyAdmin) -> KeysPage:
    return KeysPage(items=[_view(k) for k in await orchestrator.store.list_api_keys()])


@router.post("/{key_id}/revoke", response_model=KeyView)
async def revoke(
    key_id: str, request: Request, orchestrator: OrchestratorDep, principal: KeyAdmin
) -> KeyView:
    found = await orchestrator.store.revoke_api_key(key_id, at=orchestrator.clock())
    audit: AuditLog = request.app.state.audit
    await audit.record(
        actor_of(principal), "key.revoke", f"key:{key_id}", "ok" if found else "not_found"
    )
    if not found:
        raise NotFound(f"no key {key_id}")
    authenticator: Authenticator = request.app.state.authenticator
    authenticator.forget(key_id)
    key = await orchestrator.store.get_api_key(key_id)
    assert key is not None
    return _view(key)
