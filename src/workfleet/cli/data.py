"""`workfleet data ...`: market datasets kept by the backend."""

from pathlib import Path

import typer
from rich.table import Table

from workfleet.cli.common import ApiKey, BackendUrl, DataDir, fail, out, with_client
from workfleet.client import Client
from workfleet.protocol import DatasetView

data_app = typer.Typer(
    help="Market datasets (the backend keeps them; workers fetch them).", no_args_is_help=True
)
Symbol = typer.Option(..., "--symbol", help="Instrument, e.g. BTCUSD")
Timeframe = typer.Option(..., "--timeframe", help="1m, 5m, 15m, 1h, 4h or 1d")


@data_app.command("import")
def data_import(
    file: Path = typer.Argument(..., help="CSV: timestamp,open,high,low,close,volume"),
    symbol: str = Symbol,
    timeframe: str = Timeframe,
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Validate and store a CSV (a bad row is named, and nothing is stored)."""
    if not file.is_file():
        fail(f"no such file: {file}")
    _upload(
        backend_url, api_key, data_dir, symbol=symbol, timeframe=timeframe, csv=file.read_bytes()
    )


@data_app.command("generate")
def data_generate(
    symbol: str = Symbol,
    timeframe: str = Timeframe,
    bars: int = typer.Option(10_000, min=1, max=50_000_000, help="How many bars"),
    seed: int = typer.Option(0, help="Same seed, same data"),
    autocorrelation: float = typer.Option(
        0.0, help="Planted lag-1 autocorrelation of returns (-1..1), so models can learn"
    ),
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Make a deterministic synthetic dataset (random walk with regimes) and store it."""
    from workfleet.operations.marketdata import DataError, generate, to_csv  # pandas: only here

    try:
        frame = generate(bars=bars, timeframe=timeframe, seed=seed, autocorrelation=autocorrelation)
    except DataError as exc:
        fail(str(exc), code=2)
    _upload(backend_url, api_key, data_dir, symbol=symbol, timeframe=timeframe, csv=to_csv(frame))


@with_client
async def _upload(client: Client, *, symbol: str, timeframe: str, csv: bytes) -> None:
    dataset = await client.put_dataset(symbol, timeframe, csv)
    out.print(f"stored {_describe(dataset)}")


@data_app.command("list")
def data_list(
    backend_url: str | None = BackendUrl,
    api_key: str | None = ApiKey,
    data_dir: Path | None = DataDir,
) -> None:
    """Datasets the backend holds."""
    _list(backend_url, api_key, data_dir)


@with_client
async def _list(client: Client) -> None:
    table = Table("symbol", "timeframe", "bars", "from", "to", "sha256")
    for d in (await client.datasets()).items:
        table.add_row(
            d.symbol,
            d.timeframe,
            str(d.bars),
            f"{d.first_at:%Y-%m-%d %H:%M}",
            f"{d.last_at:%Y-%m-%d %H:%M}",
            d.sha256[:16],
        )
    out.print(table)


def _describe(d: DatasetView) -> str:
    return (
        f"{d.symbol} {d.timeframe}: {d.bars} bars, {d.first_at:%Y-%m-%d %H:%M} to "
        f"{d.last_at:%Y-%m-%d %H:%M} UTC, sha256 {d.sha256[:16]}…"
    )
