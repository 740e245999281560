"""A worker's own certificate in mtls mode: obtained with a one-time bootstrap token when it
has none, renewed with itself (same key) at a jittered 50-80 % of its lifetime. A worker that
cannot renew before 90 % of the lifetime is gone says so in /health (healthy: false) instead of
failing silently at expiry."""

import asyncio
import ipaddress
import random
import socket
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import structlog
from cryptography import x509

from workfleet.files import write_atomically
from workfleet.protocol import CertificateIssued, CertificateRequest, EnrollmentRequest
from workfleet.security.pki import csr_for_key, make_key_and_csr
from workfleet.security.tls import client_context
from workfleet.settings import ConfigurationError, TlsPaths, WorkerSettings
from workfleet.worker.agent import response_detail

log = structlog.get_logger(__name__)
RENEW_BETWEEN = (0.5, 0.8)  # of the lifetime, jittered so a fleet does not renew at once
UNHEALTHY_AFTER = 0.9
RETRY_S = (1.0, 60.0)
JSON = {"Content-Type": "application/json"}


def own_paths(settings: WorkerSettings) -> TlsPaths:
    return settings.tls_paths(f"worker-{settings.resolved_worker_id()}")


def served_names(settings: WorkerSettings) -> tuple[list[str], list[str]]:
    """The (DNS names, IPs) the backend reaches this worker by: its advertised URL's host."""
    host = urlsplit(settings.advertise_url).hostname if settings.advertise_url else settings.host
    if host in (None, "0.0.0.0", "::"):  # noqa: S104 - naming what was bound, not binding
        host = socket.getfqdn()
    try:
        return [], [str(ipaddress.ip_address(host))]
    except ValueError:
        return [host], []


def enroll_if_needed(settings: WorkerSettings) -> None:
    """Before the worker starts: no certificate yet and a bootstrap token given → make a key,
    have the backend sign a CSR for it, keep both (the key never leaves this host)."""
    paths = own_paths(settings)
    if paths.cert.exists() or settings.bootstrap_token is None:
        return
    worker_id = settings.resolved_worker_id()
    key_pem, csr_pem = make_key_and_csr(worker_id)
    dns, ips = served_names(settings)
    body = EnrollmentRequest(
        worker_id=worker_id,
        bootstrap_token=settings.bootstrap_token.get_secret_value(),
        csr_pem=csr_pem.decode(),
        dns=dns,
        ips=ips,
    )
    with httpx.Client(
        base_url=settings.backend_url, verify=client_context(paths.ca), trust_env=False
    ) as http:
        try:
            response = http.post(
                "/api/v1/enroll", content=body.model_dump_json(), headers=JSON, timeout=30
            )
        except httpx.HTTPError as exc:
            raise ConfigurationError(f"cannot enroll: the backend is unreachable: {exc}") from exc
    if not response.is_success:
        raise ConfigurationError(
            f"enrollment refused (HTTP {response.status_code}): {response_detail(response)}"
        )
    issued = CertificateIssued.model_validate_json(response.content)
    write_atomically(paths.key, key_pem)  # 0600
    write_atomically(paths.cert, issued.certificate_pem.encode())
    log.info("enrolled", worker_id=worker_id, not_after=issued.not_after.isoformat())


class CertificateRenewer:
    def __init__(
        self,
        settings: WorkerSettings,
        client: httpx.AsyncClient,
        client_tls: ssl.SSLContext,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._settings = settings
        self._paths = own_paths(settings)
        self._client = client
        self._client_tls = client_tls
        self._clock = clock
        self._jitter = jitter
        self.last_error: str | None = None

    def _current(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self._paths.cert.read_bytes())

    def renew_at(self, certificate: x509.Certificate) -> datetime:
        start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        return start + (end - start) * self._jitter(*RENEW_BETWEEN)

    def problem(self) -> str | None:
        """Why /health says unhealthy: the certificate is nearly spent and renewal fails."""
        certificate = self._current()
        start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        if self._clock() < start + (end - start) * UNHEALTHY_AFTER:
            return None
        return f"the certificate expires at {end.isoformat()} and renewal failed: {self.last_error}"

    async def run(self) -> None:
        delay = RETRY_S[0]
        while True:
            wait = (self.renew_at(self._current()) - self._clock()).total_seconds()
            await asyncio.sleep(max(wait, 0.0))
            try:
                await self.renew()
                delay = RETRY_S[0]
            except (httpx.HTTPError, ConfigurationError, ValueError) as exc:
                self.last_error = str(exc)
                log.error("certificate_renewal_failed", error=self.last_error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_S[1])

    async def renew(self) -> None:
        worker_id = self._settings.resolved_worker_id()
        key_pem = self._paths.key.read_bytes()
        dns, ips = served_names(self._settings)
        body = CertificateRequest(
            csr_pem=csr_for_key(key_pem, worker_id).decode(), dns=dns, ips=ips
        )
        response = await self._client.post(
            f"/api/v1/workers/{worker_id}/certificate", content=body.model_dump_json(), headers=JSON
        )
        if not response.is_success:
            raise ConfigurationError(
                f"renewal refused (HTTP {response.status_code}): {response_detail(response)}"
            )
        issued = CertificateIssued.model_validate_json(response.content)
        await asyncio.to_thread(write_atomically, self._paths.cert, issued.certificate_pem.encode())
        # new connections to the backend present it; the server side reloads it from the file
        self._client_tls.load_cert_chain(self._paths.cert, self._paths.key)
        self.last_error = None
        log.info("certificate_renewed", not_after=issued.not_after.isoformat())
