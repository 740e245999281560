"""`workfleet audit ...`: check and read the audit log offline, on the data dir."""

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Table

from workfleet.backend.audit import DIRECTORY, AuditLog, rotate_signing_key
from workfleet.backend.orchestrator import utc_now
from workfleet.cli.common import DataDir, err, fail, given, out, run, settings_or_exit
from workfleet.settings import BackendSettings, ensure_private_dir
from workfleet.store.sql import SqlStore

T = TypeVar("T")
audit_app = typer.Typer(
    help="The tamper-evident audit log (works offline on the data dir).", no_args_is_help=True
)
DatabaseUrl = typer.Option(None, "--database-url", help="Database URL [env WORKFLEET_DATABASE_URL]")


def _settings(data_dir: Path | None, database_url: str | None) -> BackendSettings:
    settings = settings_or_exit(
        lambda: BackendSettings(**given(data_dir=data_dir, database_url=database_url))
    )
    if settings.database_url is None and not (settings.data_dir / "workfleet.db").exists():
        # opening would create an empty database, and an empty log verifies as intact
        fail(f"no database in {settings.data_dir} (see --data-dir / --database-url)")
    return settings


def _with_log(settings: BackendSettings, use: Callable[[AuditLog], Awaitable[T]]) -> T:
    async def body() -> T:
        store = SqlStore(settings.resolved_database_url())
        await store.open()
        try:
            return await use(AuditLog(store, settings.data_dir / DIRECTORY, utc_now))
        finally:
            await store.close()

    return run(body())


@audit_app.command("verify")
def verify(data_dir: Path | None = DataDir, database_url: str | None = DatabaseUrl) -> None:
    """Check the hash chain and the signed checkpoints; exit 1 naming each problem."""
    report = _with_log(_settings(data_dir, database_url), lambda log: log.verify())
    if report.ok:
        out.print(
            f"audit log intact: {report.records} records, {report.checkpoints} checkpoints",
            highlight=False,
        )
        return
    for problem in report.problems:
        out.print(str(problem), highlight=False, markup=False)
    err.print(
        f"[red]audit log damaged:[/red] {len(report.problems)} problems in "
        f"{report.records} records, {report.checkpoints} checkpoints",
        highlight=False,
    )
    raise typer.Exit(1)


@audit_app.command("tail")
def tail(
    n: int = typer.Option(20, "-n", min=1, max=1000, help="How many records"),
    data_dir: Path | None = DataDir,
    database_url: str | None = DatabaseUrl,
) -> None:
    """The last records."""
    records = _with_log(_settings(data_dir, database_url), lambda log: log.tail(n))
    table = Table("seq", "time (UTC)", "actor", "action", "target", "outcome", "detail")
    for r in records:
        table.add_row(
            str(r.seq),
            r.ts.strftime("%Y-%m-%d %H:%M:%S"),
            r.actor,
            r.action,
            r.target,
            r.outcome,
            ", ".join(f"{k}={v}" for k, v in sorted(r.detail.items())),
        )
    out.print(table)


@audit_app.command("rotate-key")
def rotate_key(data_dir: Path | None = DataDir) -> None:
    """Sign checkpoints with a new key from the backend's next start.

    The old public key stays, so the checkpoints it signed still verify."""
    settings = settings_or_exit(lambda: BackendSettings(**given(data_dir=data_dir)))
    key_id = rotate_signing_key(ensure_private_dir(settings.data_dir / DIRECTORY))
    out.print(f"new checkpoint key {key_id}", highlight=False)
