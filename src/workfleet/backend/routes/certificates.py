"""mtls: a worker enrolls with a one-time bootstrap token, and renews with its certificate."""

from fastapi import APIRouter, Request

from workfleet.backend.deps import WorkerCaller, check_not_throttled, note_failed_attempt
from workfleet.backend.enrollment import Enrollment
from workfleet.domain.audit import actor_of
from workfleet.domain.errors import NotFound, Unauthenticated
from workfleet.domain.permissions import check_acts_as
from workfleet.protocol import CertificateIssued, CertificateRequest, EnrollmentRequest

router = APIRouter(prefix="/api/v1", tags=["certificates"])


def _enrollment(request: Request) -> Enrollment:
    enrollment: Enrollment | None = request.app.state.enrollment
    if enrollment is None:
        raise NotFound("certificates are issued in mtls mode only")
    return enrollment


@router.post("/enroll", response_model=CertificateIssued)
async def enroll(body: EnrollmentRequest, request: Request) -> CertificateIssued:
    """Public: the bootstrap token in the body is the credential (one use, bound to the
    worker id, short-lived); guessing it gets an address throttled like a wrong key."""
    try:
        issued = await _enrollment(request).enroll(body.worker_id, body.bootstrap_token, body)
    except Unauthenticated:
        check_not_throttled(request)
        note_failed_attempt(request)
        raise
    request.app.state.audit.note(
        f"worker:{body.worker_id}", "cert.enroll", f"worker:{body.worker_id}", "issued"
    )
    return issued


@router.post("/workers/{worker_id}/certificate", response_model=CertificateIssued)
async def renew(
    worker_id: str, body: CertificateRequest, request: Request, caller: WorkerCaller
) -> CertificateIssued:
    """Renewal with the current (valid, not revoked) certificate of that worker."""
    check_acts_as(caller, worker_id)
    if caller.bound_worker is None:
        raise NotFound("certificates are renewed in mtls mode only")
    issued = await _enrollment(request).renew(worker_id, body)
    request.app.state.audit.note(actor_of(caller), "cert.renew", f"worker:{worker_id}", "issued")
    return issued
