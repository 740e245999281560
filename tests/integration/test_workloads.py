"""Datasets kept by the backend, fetched and hash-checked by workers, and backtests run on
the fleet."""

import json
from pathlib import Path

import httpx
import pytest

from workfleet.client import ApiError
from workfleet.harness.cluster import Cluster
from workfleet.operations.marketdata import generate, to_csv

SMA = {"strategy": "sma_crossover", "strategy_params": {"fast": 5, "slow": 20}}


async def _with_dataset(cluster: Cluster, bars: int = 2000) -> None:
    async with cluster.client() as client:
        await client.put_dataset("SYN", "1h", to_csv(generate(bars=bars, timeframe="1h", seed=3)))


async def test_a_backtest_runs_on_a_worker_against_a_stored_dataset(cluster: Cluster) -> None:
    await _with_dataset(cluster)
    await cluster.start_worker("bt", worker_type="backtesting")
    await cluster.wait_workers("bt")
    async with cluster.client() as client:
        op = await client.submit("backtesting", {"symbol": "SYN", "timeframe": "1h", **SMA})
        done = await client.wait(op.operation_id, timeout_s=60)
        again = await client.submit("backtesting", {"symbol": "SYN", "timeframe": "1h", **SMA})
        repeated = await client.wait(again.operation_id, timeout_s=60)
    assert done.status == "completed", done.error
    for key in ("total_return", "sharpe", "max_drawdown", "num_trades", "win_rate", "bars"):
        assert key in done.result
    assert done.result["bars"] == 2000
    assert repeated.result == done.result  # deterministic, and the cached copy is the same data
    cached = list((cluster.data_dir / "cache" / "datasets").glob("*.csv"))
    assert len(cached) == 1


async def test_a_backtest_goes_only_to_a_backtesting_worker(cluster: Cluster) -> None:
    await _with_dataset(cluster, bars=500)
    await cluster.start_worker("tr", worker_type="training")
    await cluster.wait_workers("tr")
    async with cluster.client() as client:
        op = await client.submit("backtesting", {"symbol": "SYN", "timeframe": "1h", **SMA})
        assert (await client.get(op.operation_id, wait_s=1)).status == "pending"
        await cluster.start_worker("bt", worker_type="backtesting")
        done = await client.wait(op.operation_id, timeout_s=60)
    assert done.status == "completed" and done.worker_id == "bt"


async def test_a_backtest_of_a_missing_dataset_fails_saying_so(cluster: Cluster) -> None:
    await cluster.start_worker("bt", worker_type="backtesting")
    await cluster.wait_workers("bt")
    async with cluster.client() as client:
        op = await client.submit("backtesting", {"symbol": "NOPE", "timeframe": "1d", **SMA})
        done = await client.wait(op.operation_id, timeout_s=60)
    assert done.status == "failed"
    assert "no dataset NOPE 1d" in done.error.message


async def test_a_worker_refuses_a_dataset_that_fails_its_hash_check(cluster: Cluster) -> None:
    await _with_dataset(cluster, bars=300)
    (stored,) = (cluster.data_dir / "datasets").glob("*.csv")
    stored.write_bytes(stored.read_bytes().replace(b"1", b"2", 1))  # tampered at rest
    await cluster.start_worker("bt", worker_type="backtesting")
    await cluster.wait_workers("bt")
    async with cluster.client() as client:
        op = await client.submit("backtesting", {"symbol": "SYN", "timeframe": "1h", **SMA})
        done = await client.wait(op.operation_id, timeout_s=60)
    assert done.status == "failed"
    assert "hash check" in done.error.message


async def test_an_invalid_csv_is_refused_naming_the_row_and_nothing_is_stored(
    cluster: Cluster,
) -> None:
    bad = (
        b"timestamp,open,high,low,close,volume\n"
        b"2024-01-01T00:00:00Z,10,11,9,10.5,100\n"
        b"2024-01-01T01:00:00Z,10,9.5,9,10.5,100\n"  # high below the close
    )
    async with cluster.client() as client:
        with pytest.raises(ApiError) as refused:
            await client.put_dataset("BAD", "1h", bad)
        listed = await client.datasets()
    assert refused.value.status == 422
    assert "line 3" in refused.value.detail
    assert listed.items == []


async def test_bad_backtest_params_are_refused_at_submit_listing_the_strategies(
    cluster: Cluster,
) -> None:
    async with cluster.client() as client:
        with pytest.raises(ApiError) as refused:
            await client.submit(
                "backtesting", {"symbol": "SYN", "timeframe": "1h", "strategy": "moonshot"}
            )
    assert refused.value.status == 422
    assert "sma_crossover" in refused.value.detail and "moonshot" in refused.value.detail


async def test_data_and_backtest_from_the_cli(cluster: Cluster) -> None:
    await cluster.start_worker("bt", worker_type="backtesting")
    await cluster.wait_workers("bt")

    generated = cluster.cli(
        "data", "generate", "--symbol", "CLI", "--timeframe", "15m", "--bars", "3000", "--seed", "5"
    )
    assert generated.returncode == 0, generated.stderr
    assert "3000 bars" in generated.stdout
    assert "CLI" in cluster.cli("data", "list").stdout
    refused = cluster.cli(
        "submit",
        "backtest",
        "--symbol",
        "CLI",
        "--timeframe",
        "15m",
        "--strategy",
        "sma_crossover",
        "--param",
        "fast=50",
        "--param",
        "slow=10",
    )
    assert refused.returncode == 2 and "fast (50) must be less than slow (10)" in refused.stderr
    done = cluster.cli(
        "submit",
        "backtest",
        "--symbol",
        "CLI",
        "--timeframe",
        "15m",
        "--strategy",
        "rsi_mean_reversion",
        "--param",
        "period=10",
        "--wait",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "total_return" in done.stdout and "completed" in done.stdout
    missing = cluster.cli(
        "data", "import", str(Path("/nonexistent.csv")), "--symbol", "X", "--timeframe", "1h"
    )
    assert missing.returncode == 1 and "no such file" in missing.stderr


async def test_a_backtest_keeps_its_equity_curve_and_trades_as_artifacts(cluster: Cluster) -> None:
    await _with_dataset(cluster, bars=1000)
    await cluster.start_worker("bt", worker_type="backtesting")
    await cluster.wait_workers("bt")
    async with cluster.client() as client:
        op = await client.submit("backtesting", {"symbol": "SYN", "timeframe": "1h", **SMA})
        done = await client.wait(op.operation_id, timeout_s=60)
        listed = await client.artifacts(op.operation_id)
        curve = await client.artifact(op.operation_id, "equity_curve.csv")
        trades = json.loads(await client.artifact(op.operation_id, "trades.json"))
    assert done.status == "completed"
    assert [a.name for a in listed.items] == ["equity_curve.csv", "trades.json"]
    assert all(a.attempt == 1 for a in listed.items)
    rows = curve.decode().splitlines()
    assert rows[0] == "timestamp,equity" and len(rows) == 1001
    assert float(rows[-1].split(",")[1]) == pytest.approx(
        10_000 * (1 + done.result["total_return"])
    )
    assert len(trades) == done.result["num_trades"]


async def test_an_artifact_upload_without_the_current_lease_is_refused(cluster: Cluster) -> None:
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "noop"})  # no worker: never leased
    async with httpx.AsyncClient(base_url=cluster.url, trust_env=False) as http:
        refused = await http.put(
            f"/api/v1/operations/{op.operation_id}/artifacts/x.bin",
            content=b"zombie",
            headers={
                "Authorization": f"Bearer {cluster.token}",
                "X-Lease-Attempt": "1",
                "X-Lease-Token": "not-the-lease",
            },
        )
        client_refused = await http.put(
            f"/api/v1/operations/{op.operation_id}/artifacts/x.bin",
            content=b"x",
            headers={
                "Authorization": f"Bearer {cluster.admin_key}",
                "X-Lease-Attempt": "1",
                "X-Lease-Token": "not-the-lease",
            },
        )
    async with cluster.client() as client:
        assert (await client.artifacts(op.operation_id)).items == []
    assert refused.status_code == 409
    assert client_refused.status_code == 403  # only workers upload
