"""`workfleet up`: a backend and two local workers on SQLite, credentials made on first run."""

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import typer
from rich.table import Table

from workfleet.backend.auth import create_key_offline
from workfleet.backend.orchestrator import utc_now
from workfleet.cli.backend_server import serve_backend
from workfleet.cli.common import ADMIN_KEY_FILE, BACKEND_URL_FILE, out, run, settings_or_exit
from workfleet.client import Client
from workfleet.observability import tracing
from workfleet.observability.logging import configure_logging
from workfleet.security.identity import Identity
from workfleet.security.pki import PkiLayout, issue_locally
from workfleet.security.tls import client_context
from workfleet.settings import BackendSettings, ensure_private_dir, sqlite_url

TOKEN_FILE = "cluster.token"  # noqa: S105 - a file name, not a secret
KINDS = ("backtesting", "training")
DEMO: list[dict[str, Any]] = [
    {"action": "noop"},
    {"action": "sleep", "seconds": 2.0, "steps": 4},
    {"action": "cpu", "seconds": 1.0, "steps": 2},
    {"action": "fail"},
    {"action": "crash"},
]


def up(
    data_dir: Path = typer.Option(
        Path(".workfleet"),
        help="Data directory [env WORKFLEET_DATA_DIR]",
        envvar="WORKFLEET_DATA_DIR",
    ),
    port: int = typer.Option(8000, help="Backend port"),
    demo: bool = typer.Option(
        False, "--demo", help="Run a few diagnostic operations and show them"
    ),
    once: bool = typer.Option(False, "--once", help="Stop after start-up (and the demo)"),
    auth_mode: Literal["mtls", "token"] = typer.Option(
        "mtls",
        help="mtls: a CA and a certificate per process, made in the data dir on first run; "
        "token: one cluster secret",
    ),
) -> None:
    """Start a backend and two local workers (backtesting, training) on SQLite."""
    data = ensure_private_dir(data_dir)
    token = _secret_file(data / TOKEN_FILE, lambda: secrets.token_urlsafe(32))
    admin_key = _secret_file(
        data / ADMIN_KEY_FILE,
        lambda: run(create_key_offline(sqlite_url(data), "admin", "admin", utc_now)),
    )
    if auth_mode == "mtls":
        settings_or_exit(lambda: _local_pki(data))
    settings = BackendSettings(
        data_dir=data,
        port=port,
        host="127.0.0.1",
        auth_mode=auth_mode,
        cluster_token=token,
        log_format="console",
        log_level="WARNING",
    )
    scheme = "https" if auth_mode == "mtls" else "http"
    (data / BACKEND_URL_FILE).write_text(f"{scheme}://127.0.0.1:{port}\n")
    configure_logging(json=False, level="WARNING")
    settings_or_exit(lambda: tracing.configure("workfleet-backend"))  # on only by OTEL_*
    asyncio.run(_up(settings, token, admin_key, demo=demo, once=once))


def _local_pki(data: Path) -> None:
    """A CA and certificates for the backend and the local workers, made once: later runs
    (and renewals by hand) keep what is there."""
    issued = PkiLayout.of(data).issued_dir
    for identity in (Identity("backend"), *(Identity("worker", f"local-{k}") for k in KINDS)):
        if not (issued / f"{identity.file_stem}.crt").exists():
            issue_locally(data, identity, dns=["localhost"], ips=["127.0.0.1"])


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    if not path.exists():
        value = make()
        path.touch(mode=0o600)
        path.write_text(value + "\n")
    return path.read_text().strip()


async def _up(
    settings: BackendSettings, token: str, admin_key: str, *, demo: bool, once: bool
) -> None:
    started, stop = asyncio.Event(), asyncio.Event()
    backend = asyncio.create_task(serve_backend(settings, started, stop))
    await started.wait()
    mtls = settings.auth_mode == "mtls"
    url = f"{'https' if mtls else 'http'}://127.0.0.1:{settings.port}"
    workers = [_start_worker(settings, url, token, kind) for kind in KINDS]
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        tls = client_context(settings.tls_paths("backend").ca) if mtls else None
        async with Client(url, api_key=admin_key, tls=tls) as client:
            await _until_registered(client, len(workers))
            _banner(url, admin_key, settings.data_dir)
            if demo:
                await _demo(client)
        if once:
            stop.set()
        await stop.wait()
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            try:  # in a thread: the backend shares this loop and must answer their goodbyes
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
        stop.set()
        await backend


def _start_worker(
    settings: BackendSettings, url: str, token: str, kind: str
) -> "subprocess.Popen[bytes]":
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "WORKFLEET_CLUSTER_TOKEN": token,
        "WORKFLEET_AUTH_MODE": settings.auth_mode,
        "WORKFLEET_DATA_DIR": str(settings.data_dir),
    }
    command = [
        sys.executable,
        "-m",
        "workfleet",
        "worker",
        "--type",
        kind,
        "--port",
        "0",
        "--backend-url",
        url,
        "--worker-id",
        f"local-{kind}",
    ]
    with open(logs / f"worker-{kind}.log", "ab") as log_file:
        return subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: S603


async def _until_registered(client: Client, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len((await client.workers()).items) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not register in time: see the data dir's logs/")
        await asyncio.sleep(0.1)


def _banner(url: str, admin_key: str, data: Path) -> None:
    out.print(
        f"[bold green]workfleet is up[/bold green] at {url} (2 local workers, SQLite in {data})"
    )
    out.print(f"admin key: [bold]{admin_key}[/bold]  (also in {data / ADMIN_KEY_FILE})")
    trust = f"; your browser must trust {data}/pki/ca-bundle.crt" if url.startswith("https") else ""
    out.print(f"dashboard: {url}/ui (paste the admin key{trust})")
    out.print("try: workfleet submit diagnostic --action sleep --seconds 3 --steps 6 --wait")


async def _demo(client: Client) -> None:
    out.print("demo: running", len(DEMO), "diagnostic operations on the fleet...")
    submitted = [await client.submit("diagnostic", params) for params in DEMO]
    finals = await asyncio.gather(*(client.wait(op.operation_id, timeout_s=60) for op in submitted))
    table = Table("operation", "action", "status", "worker", "seconds", "result / error")
    for op in finals:
        took = (op.finished_at - op.created_at).total_seconds() if op.finished_at else 0.0
        detail = f"{op.error.type}: {op.error.message}" if op.error else str(op.result)
        table.add_row(
            op.operation_id,
            str(op.params.get("action")),
            op.status,
            op.worker_id or "-",
            f"{took:.2f}",
            detail,
        )
    out.print(table)
    await _demo_workloads(client)


async def _demo_workloads(client: Client) -> None:
    """A dataset, a backtest, a training run and a backtest of the model it made."""
    from workfleet.cli.operations import show  # the same table `submit --wait` prints
    from workfleet.operations.marketdata import generate, to_csv  # pandas: only here

    bars = generate(bars=20_000, timeframe="1h", seed=7, autocorrelation=0.1)
    dataset = await client.put_dataset("DEMO", "1h", to_csv(bars))
    market = {"symbol": "DEMO", "timeframe": "1h"}
    out.print(
        f"demo: dataset DEMO 1h ({dataset.bars} synthetic bars), backtest of "
        "sma_crossover(10, 30) on the backtesting worker..."
    )
    op = await client.submit(
        "backtesting",
        market | {"strategy": "sma_crossover", "strategy_params": {"fast": 10, "slow": 30}},
    )
    show(await client.wait(op.operation_id, timeout_s=120))
    out.print("demo: training a next-bar direction classifier on the training worker...")
    op = await client.submit("training", market | {"epochs": 10, "hidden_sizes": [16]})
    trained = await client.wait(op.operation_id, timeout_s=300)
    show(trained)
    if trained.status != "completed":
        return
    test_start = trained.result["test_start"]
    out.print(
        f"demo: backtest of that model from {test_start} on (the bars it was tested on, never "
        "trained on)..."
    )
    op = await client.submit(
        "backtesting",
        market
        | {"strategy": "model", "model_operation_id": trained.operation_id, "start": test_start},
    )
    show(await client.wait(op.operation_id, timeout_s=120))
