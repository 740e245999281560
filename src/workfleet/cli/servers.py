"""What `workfleet backend` and `workfleet worker` share to start a server: the TLS of its
listener (reloaded when the files change), waiting for it to listen, the URL it is reached at,
the options and warnings both commands carry. Each command lives in its own module
(backend_server, worker_server), so a server process imports only its own side."""

import asyncio
import socket
from collections.abc import Callable

import typer
from fastapi import FastAPI

from workfleet.cli.common import fail, settings_or_exit
from workfleet.security.tls import ReloadingServerTls
from workfleet.serving import AppServer
from workfleet.settings import AuthMode, BackendSettings, TlsPaths, WorkerSettings


async def until_started(server: AppServer, serving: "asyncio.Task[None]") -> None:
    while not server.started:
        if serving.done():
            serving.result()
            fail("the server stopped during start-up (is the port already in use?)")
        await asyncio.sleep(0.01)


def default_url(scheme: str, host: str, port: int) -> str:
    if host in ("0.0.0.0", "::"):  # noqa: S104 - naming what was bound, not binding
        host = socket.getfqdn()
    return f"{scheme}://{host}:{port}"


def server_tls(
    settings: BackendSettings | WorkerSettings,
    paths: TlsPaths,
    *,
    require_client_cert: bool,
    on_failure: Callable[[], None] | None = None,
) -> ReloadingServerTls | None:
    if settings.auth_mode != "mtls":
        return None
    return settings_or_exit(
        lambda: ReloadingServerTls(
            paths, require_client_cert=require_client_cert, on_reload_failure=on_failure
        )
    )


def reload_failure_counter(app: FastAPI) -> Callable[[], None] | None:
    """mtls: workfleet_tls_reload_failures_total of the app's metrics counts failed reloads."""
    counter = getattr(app.state.metrics, "tls_reload_failures", None)
    return counter.inc if counter is not None else None


_watchers: set["asyncio.Task[None]"] = set()


def watch(tls: ReloadingServerTls | None, interval_s: float) -> "asyncio.Task[None] | None":
    """Reload the certificate files when they change, for as long as the server runs."""
    if tls is None:
        return None
    task = asyncio.create_task(tls.watch(interval_s))
    _watchers.add(task)  # held: the loop keeps only weak references to tasks
    task.add_done_callback(_watchers.discard)
    return task


TlsCert = typer.Option(
    None, help="mtls: certificate [env WORKFLEET_TLS_CERT; <data-dir>/pki/issued/<name>.crt]"
)
TlsKey = typer.Option(
    None, help="mtls: private key, mode 0600 [env WORKFLEET_TLS_KEY; next to the certificate]"
)
TlsCa = typer.Option(
    None, help="mtls: CA bundle, the only roots trusted [env WORKFLEET_TLS_CA; <data-dir>/pki/]"
)


def warn_if_open(mode: AuthMode) -> None:
    if mode == "none":
        typer.secho(
            "WARNING: --auth-mode none: no authentication at all; loopback only. "
            "Never use it on a shared machine.",
            fg="red",
            err=True,
            bold=True,
        )
