from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from workfleet.backend.audit import AuditLog
from workfleet.backend.deps import require
from workfleet.domain.permissions import Principal
from workfleet.protocol import AuditPage, AuditRecordView

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("audit"))]
MAX_LIMIT = 500  # below the store's page, which must hold the one extra record asked for


@router.get("", response_model=AuditPage)
async def list_records(
    request: Request,
    _: Auditor,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> AuditPage:
    """Audit records in chain order, from after_seq on."""
    audit: AuditLog = request.app.state.audit
    found = await audit.records(after_seq, limit + 1)  # one more: is there a next page?
    page = found[:limit]
    return AuditPage(
        items=[AuditRecordView(**asdict(r)) for r in page],
        next_after_seq=page[-1].seq if len(found) > limit else None,
    )
