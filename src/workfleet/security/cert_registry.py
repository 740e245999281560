"""What the CA issued (`issued.jsonl`) and what was revoked since (`revoked.json`).

Both are plain files in `<data-dir>/pki/`, so `certs revoke` works offline. A running backend
reads them through `RevocationList` and `ClientRoles`, which re-read a file only when it changed:
one `os.stat` per lookup, so a revocation takes effect on the next request without a restart
(a TLS session keeps the identity it had at handshake; this per-request check is what ends it).
"""

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from workfleet.files import write_atomically
from workfleet.security.identity import IdentityKind

ClientRole = Literal["viewer", "operator", "admin"]
T = TypeVar("T")


class RegistryError(Exception):
    """A registry file is unreadable; callers fail closed rather than guess."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    serial: int
    identity: str  # the SAN URI
    kind: IdentityKind
    name: str | None
    role: ClientRole | None  # client certificates only: the backend maps serial -> role
    not_before: datetime
    not_after: datetime
    spki_sha256: str

    def to_json(self) -> str:
        fields: dict[str, Any] = asdict(self)
        # a decimal string: most JSON readers lose integers past 2**53; serials have 159 bits
        fields["serial"] = str(self.serial)
        fields["not_before"] = self.not_before.isoformat()
        fields["not_after"] = self.not_after.isoformat()
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> "IssuedCertificate":
        fields = json.loads(line)
        return cls(
            serial=int(fields["serial"]),
            identity=fields["identity"],
            kind=fields["kind"],
            name=fields["name"],
            role=fields["role"],
            not_before=datetime.fromisoformat(fields["not_before"]),
            not_after=datetime.fromisoformat(fields["not_after"]),
            spki_sha256=fields["spki_sha256"],
        )


def record_issued(registry: Path, record: IssuedCertificate) -> None:
    """Append one line; O_APPEND keeps concurrent writers (CLI, enrolling backend) whole."""
    line = (record.to_json() + "\n").encode()
    fd = os.open(registry, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _parse_issued(data: bytes) -> list[IssuedCertificate]:
    try:
        return [IssuedCertificate.from_json(line) for line in data.decode().splitlines() if line]
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"the issued-certificate registry is corrupt: {exc}") from None


def read_issued(registry: Path) -> list[IssuedCertificate]:
    return _parse_issued(registry.read_bytes()) if registry.exists() else []


def _parse_revoked(data: bytes) -> dict[str, dict[str, str]]:
    try:
        serials = json.loads(data)["serials"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"the revocation list is corrupt: {exc}") from None
    if not isinstance(serials, dict):
        raise RegistryError("the revocation list is corrupt: 'serials' is not an object")
    return serials


def read_revoked(revoked: Path) -> dict[str, dict[str, str]]:
    """{decimal serial: {"identity", "revoked_at"}}."""
    return _parse_revoked(revoked.read_bytes()) if revoked.exists() else {}


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Two `certs revoke` at once must not both read the old list and drop each other's entry."""
    fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def revoke(
    revoked: Path, certificates: Iterable[IssuedCertificate], *, at: datetime
) -> list[IssuedCertificate]:
    """Add the certificates to the revocation list; returns those that were not already on it."""
    with _exclusive(revoked.with_name(revoked.name + ".lock")):
        serials = read_revoked(revoked)
        added = [c for c in certificates if str(c.serial) not in serials]
        for certificate in added:
            serials[str(certificate.serial)] = {
                "identity": certificate.identity,
                "revoked_at": at.isoformat(),
            }
        if added:
            # readers stat then read: a rename shows them the old file or the new, never half
            write_atomically(revoked, json.dumps({"serials": serials}, indent=1).encode())
    return added


class _ReloadingFile(Generic[T]):
    """A file's parsed content, re-parsed only when its inode, mtime or size changed."""

    def __init__(self, path: Path, parse: Callable[[bytes], T], missing: T) -> None:
        self._path = path
        self._parse = parse
        self._missing = missing
        self._seen: tuple[int, int, int] | None = None
        self._value = missing

    def current(self) -> T:
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return self._missing
        # the inode catches an atomic replace that kept the size within one mtime tick
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            # parse before remembering `seen`: a corrupt file raises on every call (fail closed)
            self._value = self._parse(self._path.read_bytes())
            self._seen = seen
        return self._value


class RevocationList:
    """The serial deny-list, checked per request by the backend."""

    def __init__(self, path: Path) -> None:
        self._file = _ReloadingFile(path, _revoked_serials, frozenset[int]())

    def is_revoked(self, serial: int) -> bool:
        return serial in self._file.current()


def _revoked_serials(data: bytes) -> frozenset[int]:
    try:
        return frozenset(int(serial) for serial in _parse_revoked(data))
    except ValueError as exc:
        raise RegistryError(f"the revocation list is corrupt: {exc}") from None


class ClientRoles:
    """The role each client certificate was issued with, looked up by serial."""

    def __init__(self, registry: Path) -> None:
        self._file = _ReloadingFile(registry, _client_roles, dict[int, ClientRole]())

    def role_of(self, serial: int) -> ClientRole | None:
        return self._file.current().get(serial)


def _client_roles(data: bytes) -> dict[int, ClientRole]:
    return {c.serial: c.role for c in _parse_issued(data) if c.kind == "client" and c.role}
