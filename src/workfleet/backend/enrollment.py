"""Enrollment and renewal of worker certificates (mtls), on the backend that holds the CA.

Enrollment: a one-time bootstrap token bound to a worker id, and a CSR; the CSR is checked
before the token is spent, its names are ignored, and the certificate is short-lived.
Renewal: the worker's current certificate (already authenticated, not revoked) asks for a new
one for the same worker id and the same key.
"""

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from workfleet.domain.errors import Forbidden, InvalidRequest, Unauthenticated, Unavailable
from workfleet.protocol import CertificateIssued, CertificateRequest
from workfleet.security.bootstrap import BootstrapRefused, consume_bootstrap_token
from workfleet.security.pki import (
    CsrRefused,
    PkiError,
    PkiLayout,
    csr_public_key,
    load_ca,
    sign_worker_csr,
)


class Enrollment:
    def __init__(self, data_dir: Path, lifetime: timedelta, clock: Callable[[], datetime]) -> None:
        self._data_dir = data_dir
        self._lifetime = lifetime
        self._clock = clock

    async def enroll(
        self, worker_id: str, token: str, request: CertificateRequest
    ) -> CertificateIssued:
        return await asyncio.to_thread(self._enroll, worker_id, token, request)

    async def renew(self, worker_id: str, request: CertificateRequest) -> CertificateIssued:
        return await asyncio.to_thread(self._issue, worker_id, request)

    def _enroll(self, worker_id: str, token: str, request: CertificateRequest) -> CertificateIssued:
        _checked_csr(request)  # a bad request must not spend the token
        try:
            bound = consume_bootstrap_token(PkiLayout.of(self._data_dir).root, token, self._clock())
        except BootstrapRefused as exc:
            raise Unauthenticated(str(exc)) from exc
        if bound != worker_id:
            raise Forbidden(f"this bootstrap token enrolls worker {bound}, not {worker_id}")
        return self._issue(worker_id, request)

    def _issue(self, worker_id: str, request: CertificateRequest) -> CertificateIssued:
        try:
            ca = load_ca(self._data_dir)
        except PkiError as exc:
            raise Unavailable(f"this backend cannot issue certificates: {exc}") from exc
        try:
            pem = sign_worker_csr(
                ca,
                request.csr_pem.encode(),
                worker_id,
                lifetime=self._lifetime,
                dns=request.dns,
                ips=request.ips,
                now=self._clock(),
            )
        except ValueError as exc:  # CsrRefused, and names that are not DNS names or IPs
            raise InvalidRequest(str(exc)) from exc
        certificate = x509.load_pem_x509_certificate(pem)
        return CertificateIssued(
            certificate_pem=pem.decode(),
            ca_pem=ca.bundle_pem().decode(),
            not_after=certificate.not_valid_after_utc,
        )


def _checked_csr(request: CertificateRequest) -> None:
    try:
        csr_public_key(request.csr_pem.encode())
    except CsrRefused as exc:
        raise InvalidRequest(str(exc)) from exc
