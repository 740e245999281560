"""TLS for mtls mode: contexts that trust only our CA, the caller's certificate handed to the
app per connection, and certificate files reloaded without a restart.

uvicorn does not pass the client certificate to the app (no ASGI tls extension), so a protocol
subclass reads it when the connection is made and puts the parsed identity into a per-connection
copy of the app state: `request.state.peer`. Never mutate the shared app state: connections
would see each other's identity.

Reload: the listening context's SNI callback points every new handshake at the current context,
so a new certificate, CA bundle or key takes effect for new connections while the process and
its open connections go on. A broken replacement keeps the old context serving and is counted.
"""

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from workfleet.security.identity import IdentityError, PeerIdentity, parse_identity_der
from workfleet.settings import ConfigurationError, TlsPaths

log = structlog.get_logger(__name__)
# TLS 1.2 only with forward-secret AEAD suites; TLS 1.3 suites are all AEAD
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
Identify = Callable[[bytes], Any]


def check_files(paths: TlsPaths) -> None:
    """Fail closed before anything listens: each file there, the key private."""
    for what, path in (("certificate", paths.cert), ("private key", paths.key), ("CA", paths.ca)):
        if not path.is_file():
            raise ConfigurationError(
                f"mtls: the {what} file {path} does not exist (make it with `workfleet certs`, "
                "or point --tls-cert / --tls-key / --tls-ca at it)"
            )
    if paths.key.stat().st_mode & 0o077:
        raise ConfigurationError(
            f"mtls: the private key {paths.key} is readable by others: chmod 600 {paths.key}"
        )
    if "BEGIN CERTIFICATE" not in paths.ca.read_text(errors="replace"):
        raise ConfigurationError(f"mtls: the CA file {paths.ca} holds no certificate")
    _check_identity(paths.cert)


def _check_identity(cert: Path) -> None:
    """Our identity is a URI SAN (the CN is never read): a certificate without one would be
    refused by every peer, so it is refused here first, saying why."""
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except ValueError as exc:
        raise ConfigurationError(f"mtls: {cert} is not a PEM certificate: {exc}") from exc
    except x509.ExtensionNotFound:
        raise ConfigurationError(
            f"mtls: {cert} has no subjectAltName, so no identity (issue it with `workfleet "
            "certs issue`)"
        ) from None
    if not san.value.get_values_for_type(x509.UniformResourceIdentifier):
        raise ConfigurationError(f"mtls: {cert} carries no identity URI in its subjectAltName")


def server_context(paths: TlsPaths, *, require_client_cert: bool) -> ssl.SSLContext:
    """A server context: our certificate, only our CA for callers' certificates.
    `require_client_cert=False` (the backend) still verifies any certificate a caller shows,
    and lets clients with an API key in without one."""
    check_files(paths)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    try:
        context.load_cert_chain(paths.cert, paths.key)
        context.load_verify_locations(cafile=paths.ca)
    except ssl.SSLError as exc:
        raise ConfigurationError(f"mtls: cannot load {paths.cert} / {paths.key}: {exc}") from exc
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(ca: Path, identity: TlsPaths | None = None) -> ssl.SSLContext:
    """A client context trusting only `ca` (never certifi or the system roots), checking the
    server's name against its SAN only (never the CN), presenting `identity` if given."""
    if not ca.is_file():
        raise ConfigurationError(f"TLS: the CA file {ca} does not exist (see --tls-ca)")
    context = ssl.create_default_context(cafile=ca)  # with a cafile, no default roots load
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.hostname_checks_common_name = False
    if identity is not None:
        check_files(identity)
        context.load_cert_chain(identity.cert, identity.key)
    return context


class ReloadingServerTls:
    """The listener's context, which hands each new handshake the current context; `reload()`
    builds a new one when the files changed."""

    def __init__(
        self,
        paths: TlsPaths,
        *,
        require_client_cert: bool,
        on_reload_failure: Callable[[], None] | None = None,
    ) -> None:
        self._paths = paths
        self._require = require_client_cert
        self._on_failure = on_reload_failure
        self.listener = server_context(paths, require_client_cert=require_client_cert)
        self.current = self.listener
        self.listener.sni_callback = self._use_current
        self._stamp = _stamp(paths)

    def _use_current(self, connection: ssl.SSLObject, _name: str | None, _ctx: Any) -> None:
        # runs for every handshake, with or without SNI
        if self.current is not self.listener:
            connection.context = self.current

    def reload(self) -> bool:
        """Swap in the files' new contents if they changed; True if the context changed."""
        stamp = _stamp(self._paths)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.current = server_context(self._paths, require_client_cert=self._require)
        except (ConfigurationError, OSError, ssl.SSLError) as exc:
            log.error("tls_reload_failed", error=str(exc), cert=str(self._paths.cert))
            if self._on_failure is not None:
                self._on_failure()
            return False
        log.info("tls_reloaded", cert=str(self._paths.cert))
        return True

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.reload()


def _stamp(paths: TlsPaths) -> tuple[tuple[int, int], ...]:
    stamps = []
    for path in (paths.cert, paths.key, paths.ca):
        try:
            status = path.stat()
            stamps.append((status.st_mtime_ns, status.st_size))
        except OSError:
            stamps.append((0, 0))
    return tuple(stamps)


def identify_peers(trust_domain: str) -> Identify:
    """The identity in a verified peer certificate, or None when it carries none of ours (the
    caller is then treated as having shown no certificate)."""

    def identify(der: bytes) -> PeerIdentity | None:
        try:
            return parse_identity_der(der, trust_domain)
        except IdentityError as exc:
            log.warning("peer_certificate_without_identity", error=str(exc))
            return None

    return identify


def peer_protocol(identify: Identify) -> type[HttpToolsProtocol]:
    """An HTTP protocol class that puts `identify(der)` of the caller's certificate (None when
    it showed none) into `request.state.peer` for every request on that connection."""

    class PeerCertProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            # a per-connection copy: the shared state must never carry one caller's identity
            self.app_state = {**self.app_state, "peer": identify(der) if der else None}

    return PeerCertProtocol
