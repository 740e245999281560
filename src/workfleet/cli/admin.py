"""`workfleet workers ...` and `workfleet keys ...`."""

from pathlib import Path
from typing import Literal

import typer
from rich.table import Table

from workfleet.backend.auth import create_key_offline
from workfleet.backend.orchestrator import utc_now
from workfleet.cli.common import (
    ApiKey,
    BackendUrl,
    DataDir,
    fail,
    given,
    out,
    run,
    settings_or_exit,
    with_client,
)
from workfleet.client import Client
from workfleet.settings import BackendSettings
from workfleet.store.sql import SqlStore

workers_app = typer.Typer(help="The worker registry.", no_args_is_help=True)
keys_app = typer.Typer(help="Client API keys (work offline on the data dir).", no_args_is_help=True)


@workers_app.command("list")
def workers_list(
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Workers with their state, load and what they run."""
    _workers(backend_url, api_key, data_dir)


@with_client
async def _workers(client: Client) -> None:
    table = Table("worker", "type", "status", "slots", "running", "endpoint", "last healthy")
    for w in (await client.workers()).items:
        last = w.last_healthy_at.strftime("%H:%M:%S") if w.last_healthy_at else "-"
        table.add_row(
            w.worker_id,
            w.worker_type,
            w.status,
            str(w.capabilities.slots),
            str(len(w.running_operations)),
            w.endpoint_url,
            last,
        )
    out.print(table)


@workers_app.command("drain")
def workers_drain(
    worker_id: str,
    undo: bool = typer.Option(False, "--undo", help="Accept work again"),
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Send no new operations to a worker; running ones finish."""
    _drain(backend_url, api_key, data_dir, worker_id=worker_id, undo=undo)


@with_client
async def _drain(client: Client, *, worker_id: str, undo: bool) -> None:
    worker = await client.drain(worker_id, undo=undo)
    out.print(f"{worker.worker_id}: {worker.status}")


def _store(data_dir: Path | None, database_url: str | None) -> SqlStore:
    return SqlStore(_database_url(data_dir, database_url))


def _database_url(data_dir: Path | None, database_url: str | None) -> str:
    settings = settings_or_exit(
        lambda: BackendSettings(**given(data_dir=data_dir, database_url=database_url))
    )
    if settings.database_url is None and not settings.data_dir.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.resolved_database_url()


DatabaseUrl = typer.Option(None, "--database-url", help="Database URL [env WORKFLEET_DATABASE_URL]")


@keys_app.command("create")
def keys_create(
    role: Literal["viewer", "operator", "admin"] = typer.Option(
        ..., help="viewer < operator < admin"
    ),
    name: str = typer.Option(
        "default", help="Who the key is for (shown as the owner of operations)"
    ),
    data_dir: Path | None = DataDir,
    database_url: str | None = DatabaseUrl,
) -> None:
    """Create a key; prints the raw key once (and nothing else) on stdout."""

    url = _database_url(data_dir, database_url)
    typer.echo(run(create_key_offline(url, name, role, utc_now)))


@keys_app.command("list")
def keys_list(data_dir: Path | None = DataDir, database_url: str | None = DatabaseUrl) -> None:
    """Keys (never their secrets)."""

    async def body() -> None:
        store = _store(data_dir, database_url)
        await store.open()
        try:
            table = Table("key id", "name", "role", "created", "revoked")
            for key in await store.list_api_keys():
                table.add_row(
                    key.key_id,
                    key.name,
                    key.role,
                    str(key.created_at)[:19],
                    str(key.revoked_at)[:19] if key.revoked_at else "",
                )
            out.print(table)
        finally:
            await store.close()

    run(body())


@keys_app.command("revoke")
def keys_revoke(
    key_id: str, data_dir: Path | None = DataDir, database_url: str | None = DatabaseUrl
) -> None:
    """Revoke a key; a running backend refuses it within a second."""

    async def body() -> bool:
        store = _store(data_dir, database_url)
        await store.open()
        try:
            return await store.revoke_api_key(key_id, at=utc_now())
        finally:
            await store.close()

    if not run(body()):
        fail(f"no key {key_id}")
    out.print(f"revoked {key_id}")
