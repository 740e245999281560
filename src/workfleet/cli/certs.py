"""`workfleet certs ...`: the private CA of mTLS mode, offline on the data dir."""

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.table import Table

from workfleet.cli.common import DataDir, fail, given, out, settings_or_exit
from workfleet.security.bootstrap import create_bootstrap_token
from workfleet.security.cert_registry import (
    ClientRole,
    RegistryError,
    read_issued,
    read_revoked,
    revoke,
)
from workfleet.security.identity import (
    DEFAULT_TRUST_DOMAIN,
    SCHEME,
    Identity,
    IdentityError,
    IdentityKind,
)
from workfleet.security.pki import (
    CA_LIFETIME,
    InvalidRequest,
    PkiError,
    existing_layout,
    finish_ca_rotation,
    init_ca,
    issue_certificate,
    load_ca,
    rotate_ca,
    write_credentials,
)
from workfleet.settings import ClientSettings

certs_app = typer.Typer(
    help="The private CA of mTLS mode (works offline on the data dir).", no_args_is_help=True
)
DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _data_dir(data_dir: Path | None) -> Path:
    return settings_or_exit(lambda: ClientSettings(**given(data_dir=data_dir))).data_dir


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A refused request is a usage error (2); a PKI that cannot do it, or a file, is 1."""
    try:
        yield
    except (IdentityError, InvalidRequest) as exc:
        fail(str(exc), code=2)
    except (PkiError, RegistryError, OSError) as exc:
        fail(str(exc))


def _say(line: str) -> None:
    """Unwrapped, so paths and serials can be copied whole from a narrow terminal."""
    out.print(line, highlight=False, soft_wrap=True)


def _day(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


@certs_app.command("init")
def certs_init(
    data_dir: Path | None = DataDir,
    trust_domain: str = typer.Option(
        DEFAULT_TRUST_DOMAIN,
        "--trust-domain",
        help="Namespace of every identity: spiffe://<trust-domain>/...",
    ),
    days: int = typer.Option(CA_LIFETIME.days, "--days", min=1, help="CA lifetime in days"),
) -> None:
    """Create the CA in <data-dir>/pki/ (never overwrites an existing one)."""
    with _one_line_errors():
        ca = init_ca(_data_dir(data_dir), trust_domain, timedelta(days=days))
    _say(
        f"created the CA of trust domain {ca.trust_domain} in {ca.layout.root},"
        f" valid until {_day(ca.cert.not_valid_after_utc)}"
    )
    _say(f"every process trusts {ca.layout.bundle}")


@certs_app.command("issue")
def certs_issue(
    kind: IdentityKind = typer.Argument(..., help="Who the certificate is for"),
    name: str | None = typer.Argument(
        None, help="The worker id (worker) or client name (client); none for the others"
    ),
    dns: list[str] | None = typer.Option(
        None, "--dns", help="A DNS name clients reach this server by (backend/worker; repeatable)"
    ),
    ip: list[str] | None = typer.Option(
        None, "--ip", help="An IP address clients reach this server at (backend/worker; repeatable)"
    ),
    days: int | None = typer.Option(
        None, "--days", min=1, help="Lifetime in days (default: 365 for backend, 30 for the others)"
    ),
    hours: int | None = typer.Option(None, "--hours", min=1, help="Lifetime in hours"),
    role: ClientRole | None = typer.Option(
        None, "--role", help="Client certificates only: viewer < operator < admin (default: viewer)"
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        help="Where NAME.crt, NAME.key and ca.crt go (default: <data-dir>/pki/issued/)",
        show_default=False,
    ),
    data_dir: Path | None = DataDir,
) -> None:
    """Issue a key and certificate: NAME is backend, worker-<id>, client-<name> or monitoring."""
    with _one_line_errors():
        identity = Identity(kind, name)
        lifetime = _lifetime(days, hours)
        ca = load_ca(_data_dir(data_dir))
        issued = issue_certificate(
            ca, identity, lifetime=lifetime, dns=dns or [], ips=ip or [], role=role
        )
        paths = write_credentials(
            out_dir or ca.layout.issued_dir, identity, issued, ca.bundle_pem()
        )
    record = issued.record
    role_note = f", role {record.role}" if record.role else ""
    _say(
        f"issued {record.identity}{role_note}, serial {record.serial:x},"
        f" valid until {_day(record.not_after)}"
    )
    for label, path in zip(("certificate", "key", "CA bundle"), paths, strict=True):
        _say(f"  {label:<12}{path}")


def _lifetime(days: int | None, hours: int | None) -> timedelta | None:
    """None: the default lifetime of the certificate's kind."""
    if days is not None and hours is not None:
        raise InvalidRequest("give --days or --hours, not both")
    if days is not None:
        return timedelta(days=days)
    return None if hours is None else timedelta(hours=hours)


@certs_app.command("list")
def certs_list(data_dir: Path | None = DataDir) -> None:
    """Every certificate the CA issued, with its expiry and whether it is revoked."""
    with _one_line_errors():
        layout = existing_layout(_data_dir(data_dir))
        issued = read_issued(layout.registry)
        revoked = read_revoked(layout.revoked)
    table = Table()
    # folded, never cut: a serial is copied from here into `certs revoke`
    table.add_column("serial", overflow="fold")
    table.add_column("identity", overflow="fold")
    for heading in ("role", "expires", "revoked"):
        table.add_column(heading)
    for certificate in issued:
        table.add_row(
            f"{certificate.serial:x}",
            certificate.identity,
            certificate.role or "",
            _day(certificate.not_after),
            "yes" if str(certificate.serial) in revoked else "no",
        )
    out.print(table)


@certs_app.command("revoke")
def certs_revoke(
    serial: str | None = typer.Argument(
        None, help="Serial number in hex, as `certs list` shows it", show_default=False
    ),
    identity: str | None = typer.Option(
        None,
        "--identity",
        help="Revoke every certificate of an identity: its spiffe:// URI or its NAME"
        " (backend, worker-<id>, client-<name>, monitoring)",
    ),
    data_dir: Path | None = DataDir,
) -> None:
    """Revoke certificates; a running backend refuses them from its next request on."""
    if (serial is None) == (identity is None):
        fail("give a SERIAL or --identity, one of the two", code=2)
    with _one_line_errors():
        ca = load_ca(_data_dir(data_dir))
        issued = read_issued(ca.layout.registry)
        if serial is not None:
            number = _hex_serial(serial)
            matching = [c for c in issued if c.serial == number]
            wanted = f"serial {serial}"
        else:
            assert identity is not None
            uri = _identity(identity, ca.trust_domain).uri(ca.trust_domain)
            matching = [c for c in issued if c.identity == uri]
            wanted = uri
        if not matching:
            raise PkiError(f"no issued certificate has {wanted} (see `workfleet certs list`)")
        added = revoke(ca.layout.revoked, matching, at=datetime.now(UTC))
    if not added:
        _say(f"{wanted} was already revoked")
    for certificate in added:
        _say(f"revoked {certificate.serial:x} ({certificate.identity})")


def _hex_serial(text: str) -> int:
    try:
        return int(text.lower().removeprefix("0x").replace(":", ""), 16)
    except ValueError:
        raise InvalidRequest(f"serial {text!r} is not hexadecimal") from None


def _identity(text: str, trust_domain: str) -> Identity:
    if text.startswith(SCHEME):
        return Identity.from_uri(text, trust_domain)
    return Identity.from_file_stem(text)


@certs_app.command("bootstrap-token")
def certs_bootstrap_token(
    worker_id: str = typer.Option(
        ..., "--worker-id", help="The one worker id this token can enroll"
    ),
    ttl: str = typer.Option(
        "1h", "--ttl", help="How long it can be used: 90s, 30m, 1h, ... (at most 24h)"
    ),
    data_dir: Path | None = DataDir,
) -> None:
    """Print a one-time enrollment token for a worker (only the token goes to stdout)."""
    with _one_line_errors():
        layout = existing_layout(_data_dir(data_dir))
        raw = create_bootstrap_token(layout.root, worker_id, _duration(ttl))
    typer.echo(raw)


def _duration(text: str) -> timedelta:
    match = DURATION.fullmatch(text.strip())
    if match is None:
        raise InvalidRequest(f"duration {text!r} must look like 90s, 30m, 1h or 1d")
    amount, unit = match.groups()
    return timedelta(**{DURATION_UNITS[unit]: int(amount)})


@certs_app.command("rotate-ca")
def certs_rotate_ca(
    finish: bool = typer.Option(
        False, "--finish", help="End the overlap: drop the previous CA from ca-bundle.crt"
    ),
    days: int = typer.Option(
        CA_LIFETIME.days, "--days", min=1, help="Lifetime of the new CA in days"
    ),
    data_dir: Path | None = DataDir,
) -> None:
    """Replace the CA with an overlap during which both are trusted.

    \b
    1. `certs rotate-ca`: a new CA signs every certificate from now on; the old one is kept
       as ca-previous.* and ca-bundle.crt trusts both, so existing certificates still work.
    2. Hand the new ca-bundle.crt to every process (certificates issued now come with it
       as ca.crt).
    3. Re-issue every certificate with `certs issue` (enrolled workers renew on their own).
    4. When no certificate of the old CA is in use any more, `certs rotate-ca --finish`
       drops it from ca-bundle.crt; hand that bundle out again. Old certificates then fail.
    """
    with _one_line_errors():
        if finish:
            finish_ca_rotation(_data_dir(data_dir))
            _say("the previous CA is no longer trusted; hand out the new ca-bundle.crt")
            return
        ca = rotate_ca(_data_dir(data_dir), timedelta(days=days))
    _say(
        f"new CA in {ca.layout.root}, valid until {_day(ca.cert.not_valid_after_utc)};"
        f" {ca.layout.bundle} trusts the new and the previous CA until `certs rotate-ca --finish`"
    )
