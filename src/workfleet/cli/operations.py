"""`workfleet submit ...` and `workfleet ops ...`."""

import asyncio
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Literal

import typer
from pydantic import BaseModel, ValidationError
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from workfleet.cli.common import ApiKey, BackendUrl, DataDir, fail, out, with_client
from workfleet.client import Client
from workfleet.domain.labels import parse_labels
from workfleet.operations.backtest.params import BacktestParams
from workfleet.operations.training.params import TrainingParams
from workfleet.protocol import OperationView, RequirementsModel
from workfleet.validation import problems

submit_app = typer.Typer(help="Submit an operation.", no_args_is_help=True)
ops_app = typer.Typer(help="Inspect and cancel operations.", no_args_is_help=True)
TERMINAL = ("completed", "failed", "cancelled")

# Requirements: which workers may run the operation. Taken as text and checked here, so a bad
# value is one line naming the flag (exit 2) before anything is sent; the backend refuses with
# 422 what no registered worker could ever meet, and queues what only busy workers meet.
Gpu = typer.Option(
    None,
    "--gpu",
    metavar="required|preferred|none",
    help="GPU: required, preferred (GPU workers first, else any), none  [default: none]",
    show_default=False,
)
MinMemoryGb = typer.Option(
    None, "--min-memory-gb", metavar="GB", help="Least memory the worker must have"
)
MinCores = typer.Option(
    None, "--min-cores", metavar="N", help="Least CPU cores the worker must have"
)
WorkerType = typer.Option(None, "--worker-type", metavar="TYPE", help="Only workers of this type")
RequireLabel = typer.Option(
    [],
    "--require-label",
    metavar="K=V",
    help="The worker must carry this label (repeatable; see `workfleet worker --label`)",
)
REQUIREMENT_FLAGS = {
    "gpu": "--gpu",
    "min_memory_gb": "--min-memory-gb",
    "min_cores": "--min-cores",
    "worker_type": "--worker-type",
    "labels": "--require-label",
}


@submit_app.command("diagnostic")
def submit_diagnostic(
    action: Literal["noop", "sleep", "fail", "crash", "cpu"] = typer.Option(
        "noop", help="What to do"
    ),
    seconds: float = typer.Option(0.0, help="Duration of sleep / cpu"),
    steps: int = typer.Option(1, help="Progress reports over the duration"),
    priority: int = typer.Option(0, min=0, max=9, help="0 (lowest) to 9"),
    gpu: str | None = Gpu,
    min_memory_gb: str | None = MinMemoryGb,
    min_cores: str | None = MinCores,
    worker_type: str | None = WorkerType,
    require_label: list[str] = RequireLabel,
    wait: bool = typer.Option(False, "--wait", help="Show progress until it finishes"),
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Submit a `diagnostic` operation (for trying the fleet out, tests and load runs)."""
    params = {"action": action, "seconds": seconds, "steps": steps}
    requirements = _requirements(gpu, min_memory_gb, min_cores, worker_type, require_label)
    _submit(
        backend_url,
        api_key,
        data_dir,
        params=params,
        priority=priority,
        requirements=requirements,
        wait=wait,
    )


@submit_app.command("backtest")
def submit_backtest(
    symbol: str = typer.Option(..., help="Dataset symbol (see `workfleet data list`)"),
    timeframe: str = typer.Option(..., help="Dataset timeframe: 1m, 5m, 15m, 1h, 4h or 1d"),
    strategy: str = typer.Option(
        ..., help="sma_crossover, rsi_mean_reversion, bollinger_breakout or model"
    ),
    param: list[str] = typer.Option([], "--param", help="Strategy parameter k=v (repeatable)"),
    model_operation_id: str | None = typer.Option(
        None, "--model", help="Training operation whose model the `model` strategy trades"
    ),
    start: datetime | None = typer.Option(None, help="First bar (UTC)"),
    end: datetime | None = typer.Option(None, help="End of the bars, excluded (UTC)"),
    initial_capital: float = typer.Option(10_000.0, help="Starting cash"),
    commission: float = typer.Option(0.0, help="Fraction of each traded notional"),
    slippage: float = typer.Option(0.0, help="Fraction of the open paid per fill"),
    position_fraction: float = typer.Option(1.0, help="Share of equity exposed"),
    allow_short: bool = typer.Option(False, "--allow-short", help="Let the strategy go short"),
    priority: int = typer.Option(0, min=0, max=9, help="0 (lowest) to 9"),
    gpu: str | None = Gpu,
    min_memory_gb: str | None = MinMemoryGb,
    min_cores: str | None = MinCores,
    worker_type: str | None = WorkerType,
    require_label: list[str] = RequireLabel,
    wait: bool = typer.Option(False, "--wait", help="Show progress, then the result"),
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Backtest a strategy on a stored dataset (checked here before anything is sent)."""
    raw: dict[str, object] = {
        "symbol": symbol,
        "timeframe": timeframe,
        "strategy": strategy,
        "strategy_params": _key_values(param),
        "start": start,
        "end": end,
        "initial_capital": initial_capital,
        "commission": commission,
        "slippage": slippage,
        "position_fraction": position_fraction,
        "allow_short": allow_short,
        "model_operation_id": model_operation_id,
    }
    params = _checked(BacktestParams, raw)
    requirements = _requirements(gpu, min_memory_gb, min_cores, worker_type, require_label)
    _submit(
        backend_url,
        api_key,
        data_dir,
        operation_type="backtesting",
        params=params,
        priority=priority,
        requirements=requirements,
        wait=wait,
    )


@submit_app.command("training")
def submit_training(
    symbol: str = typer.Option(..., help="Dataset symbol (see `workfleet data list`)"),
    timeframe: str = typer.Option(..., help="Dataset timeframe: 1m, 5m, 15m, 1h, 4h or 1d"),
    start: datetime | None = typer.Option(None, help="First bar (UTC)"),
    end: datetime | None = typer.Option(None, help="End of the bars, excluded (UTC)"),
    epochs: int = typer.Option(20, help="Most passes over the training data"),
    batch_size: int = typer.Option(256, help="Samples per step"),
    learning_rate: float = typer.Option(1e-3, help="Adam's step size"),
    hidden: str = typer.Option("32,16", help="Units per hidden layer, comma-separated"),
    seed: int = typer.Option(0, help="Weights and shuffling (same seed, same model on CPU)"),
    device: str = typer.Option("auto", help="auto (CUDA, then MPS, then CPU), cuda, mps, cpu"),
    validation_fraction: float = typer.Option(0.15, help="Share of samples after train"),
    test_fraction: float = typer.Option(0.15, help="Share of samples, the most recent"),
    patience: int = typer.Option(5, help="Epochs without a better validation loss to stop"),
    priority: int = typer.Option(0, min=0, max=9, help="0 (lowest) to 9"),
    gpu: str | None = Gpu,
    min_memory_gb: str | None = MinMemoryGb,
    min_cores: str | None = MinCores,
    worker_type: str | None = WorkerType,
    require_label: list[str] = RequireLabel,
    wait: bool = typer.Option(False, "--wait", help="Show progress, then the result"),
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Train a next-bar direction classifier on a stored dataset (checked before it is sent)."""
    raw: dict[str, object] = {
        "symbol": symbol,
        "timeframe": timeframe,
        "start": start,
        "end": end,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "hidden_sizes": _layer_sizes(hidden),
        "seed": seed,
        "device": device,
        "validation_fraction": validation_fraction,
        "test_fraction": test_fraction,
        "patience": patience,
    }
    params = _checked(TrainingParams, raw)
    requirements = _requirements(gpu, min_memory_gb, min_cores, worker_type, require_label)
    _submit(
        backend_url,
        api_key,
        data_dir,
        operation_type="training",
        params=params,
        priority=priority,
        requirements=requirements,
        wait=wait,
    )


def _checked(model: type[BaseModel], raw: dict[str, object]) -> dict[str, object]:
    """Params as the backend will take them, or one line saying what is wrong."""
    try:
        checked: dict[str, object] = model.model_validate(raw).model_dump(
            mode="json", exclude_none=True
        )
    except ValidationError as exc:
        fail(problems(exc), code=2)
    return checked


def _requirements(
    gpu: str | None,
    min_memory_gb: str | None,
    min_cores: str | None,
    worker_type: str | None,
    labels: list[str],
) -> RequirementsModel | None:
    """The requirement flags as the backend takes them (None: none given), or one line naming
    the flag that is wrong."""
    raw: dict[str, object] = {
        name: value
        for name, value in (
            ("gpu", gpu),
            ("min_memory_gb", min_memory_gb),
            ("min_cores", min_cores),
            ("worker_type", worker_type),
        )
        if value is not None
    }
    if labels:
        try:
            raw["labels"] = parse_labels(labels)
        except ValueError as exc:
            fail(f"--require-label: {exc}", code=2)
    if not raw:
        return None
    if worker_type is not None and not worker_type.strip():
        fail("--worker-type: must not be empty", code=2)
    try:
        requirements = RequirementsModel.model_validate(raw)
    except ValidationError as exc:
        wrong = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            flag = REQUIREMENT_FLAGS.get(name, name)
            wrong.append(f"{flag} {raw.get(name)!r}: {error['msg']}")
        fail("; ".join(wrong), code=2)
    if not math.isfinite(requirements.min_memory_gb):
        fail(f"--min-memory-gb {min_memory_gb!r}: must be a finite number", code=2)
    return requirements


def _layer_sizes(text: str) -> list[str]:
    """'32,16' -> ['32', '16'] (validated as integers with the rest); '' -> no hidden layer."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _key_values(pairs: list[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--param wants key=value, got {pair!r}", code=2)
        parsed[key.strip()] = value.strip()
    return parsed


@with_client
async def _submit(
    client: Client,
    *,
    params: dict[str, object],
    priority: int,
    wait: bool,
    requirements: RequirementsModel | None = None,
    operation_type: str = "diagnostic",
) -> None:
    op = await client.submit(operation_type, params, priority=priority, requirements=requirements)
    out.print(f"submitted [bold]{op.operation_id}[/bold] ({op.status})")
    if wait:
        final = await follow(client, op.operation_id)
        show(final)
        if final.status != "completed":
            raise typer.Exit(1)


async def follow(client: Client, operation_id: str) -> OperationView:
    """A progress bar until the operation is final."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task(operation_id, total=100)
        while True:
            op = await client.get(operation_id, wait_s=0.5)
            percentage = op.progress.percentage if op.progress and op.progress.percentage else 0.0
            message = op.progress.message if op.progress and op.progress.message else ""
            bar.update(
                task, completed=percentage, description=f"{operation_id} {op.status} {message}"
            )
            if op.status in TERMINAL:
                return op
            await asyncio.sleep(0.2)


def show(op: OperationView) -> None:
    table = Table(show_header=False, box=None)
    for name, value in (
        ("operation", op.operation_id),
        ("type", op.operation_type),
        ("status", op.status),
        ("worker", op.worker_id or "-"),
        ("attempt", str(op.attempt)),
        ("owner", op.owner),
        ("requirements", _describe(op.requirements)),
        ("created", str(op.created_at)),
        ("started", str(op.started_at or "-")),
        ("finished", str(op.finished_at or "-")),
        ("error", f"{op.error.type}: {op.error.message}" if op.error else "-"),
        ("trace", op.trace_id or "-"),  # tracing on: find it in Jaeger, Tempo...
    ):
        table.add_row(f"[bold]{name}[/bold]", value)
    if isinstance(op.result, dict):  # one row per figure reads better than one JSON line
        for key, value in op.result.items():
            table.add_row(f"[bold]{key}[/bold]", _figure(value))
    else:
        table.add_row(
            "[bold]result[/bold]", json.dumps(op.result) if op.result is not None else "-"
        )
    out.print(table)


def _describe(requirements: RequirementsModel) -> str:
    """The requirements that restrict placement, as the flags would give them; '-': none."""
    parts = []
    if requirements.gpu != "none":
        parts.append(f"gpu {requirements.gpu}")
    if requirements.min_memory_gb:
        parts.append(f"min_memory_gb {requirements.min_memory_gb:g}")
    if requirements.min_cores:
        parts.append(f"min_cores {requirements.min_cores}")
    if requirements.worker_type is not None:
        parts.append(f"worker_type {requirements.worker_type}")
    parts += [f"label {key}={value}" for key, value in sorted(requirements.labels.items())]
    return ", ".join(parts) or "-"


def _figure(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


@ops_app.command("list")
def ops_list(
    status: list[str] = typer.Option([], "--status", help="Filter (repeatable)"),
    operation_type: str | None = typer.Option(None, "--type", help="Filter by operation type"),
    limit: int = typer.Option(20, min=1, max=1000),
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """List operations, newest first."""
    _list(backend_url, api_key, data_dir, status=status, operation_type=operation_type, limit=limit)


@with_client
async def _list(
    client: Client, *, status: list[str], operation_type: str | None, limit: int
) -> None:
    page = await client.list(status=status, operation_type=operation_type, limit=limit)
    table = Table("operation", "type", "status", "worker", "progress", "created")
    for op in page.items:
        progress = (
            f"{op.progress.percentage:.0f}%" if op.progress and op.progress.percentage else ""
        )
        table.add_row(
            op.operation_id,
            op.operation_type,
            op.status,
            op.worker_id or "",
            progress,
            op.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    out.print(table)


@ops_app.command("show")
def ops_show(
    operation_id: str,
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Show one operation."""
    _show(backend_url, api_key, data_dir, operation_id=operation_id)


@with_client
async def _show(client: Client, *, operation_id: str) -> None:
    show(await client.get(operation_id))


@ops_app.command("cancel")
def ops_cancel(
    operation_id: str,
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Cancel: at once if pending, else stop on its worker (killed after a grace period)."""
    _cancel(backend_url, api_key, data_dir, operation_id=operation_id)


@with_client
async def _cancel(client: Client, *, operation_id: str) -> None:
    op = await client.cancel(operation_id)
    said = "cancelled" if op.status == "cancelled" else "cancel requested; stopping on its worker"
    out.print(f"{operation_id}: {said}")


@ops_app.command("artifacts")
def ops_artifacts(
    operation_id: str,
    download: Path | None = typer.Option(None, "--download", help="Save them into this folder"),
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Files an operation produced (e.g. a backtest's equity curve and trades)."""
    _artifacts(backend_url, api_key, data_dir, operation_id=operation_id, download=download)


@with_client
async def _artifacts(client: Client, *, operation_id: str, download: Path | None) -> None:
    page = await client.artifacts(operation_id)
    table = Table("name", "bytes", "attempt", "sha256")
    for artifact in page.items:
        table.add_row(
            artifact.name, str(artifact.size_bytes), str(artifact.attempt), artifact.sha256[:16]
        )
        if download is not None:
            data = await client.artifact(operation_id, artifact.name)
            await asyncio.to_thread(_save, download / artifact.name, data)
    out.print(table)
    if download is not None:
        out.print(f"saved {len(page.items)} file(s) to {download}")


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@ops_app.command("watch")
def ops_watch(
    operation_id: str,
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Follow an operation's progress until it finishes."""
    _watch(backend_url, api_key, data_dir, operation_id=operation_id)


@with_client
async def _watch(client: Client, *, operation_id: str) -> None:
    show(await follow(client, operation_id))
