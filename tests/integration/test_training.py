"""Training on the fleet: epochs reported, the model kept as a checked artifact, backtests of
that model, and training that resumes from its checkpoint after its worker is SIGKILLed."""

import asyncio
import hashlib
import signal
from typing import Any

import numpy as np

from workfleet.client import Client
from workfleet.harness.cluster import Cluster, wait_for
from workfleet.operations.marketdata import generate, to_csv
from workfleet.operations.training.model_file import TrainedModel
from workfleet.protocol import OperationView

TRAINING = {
    "symbol": "SYN",
    "timeframe": "1h",
    "epochs": 4,
    "batch_size": 128,
    "hidden_sizes": [16],
    "seed": 3,
}


async def _with_dataset(cluster: Cluster, bars: int = 5000) -> None:
    frame = generate(bars=bars, timeframe="1h", seed=5, autocorrelation=0.3)
    async with cluster.client() as client:
        await client.put_dataset("SYN", "1h", to_csv(frame))


async def _train(client: Client, **overrides: Any) -> OperationView:
    op = await client.submit("training", TRAINING | overrides)
    return await client.wait(op.operation_id, timeout_s=120)


async def test_a_model_is_trained_on_a_training_worker_and_kept_with_its_hash(
    cluster: Cluster,
) -> None:
    await _with_dataset(cluster)
    await cluster.start_worker("bt", worker_type="backtesting")
    await cluster.start_worker("tr", worker_type="training")
    await cluster.wait_workers("bt", "tr")
    async with cluster.client() as client:
        done = await _train(client)
        artifacts = {a.name: a for a in (await client.artifacts(done.operation_id)).items}
        model_bytes = await client.artifact(done.operation_id, "model.npz")
    assert done.status == "completed", done.error
    assert done.worker_id == "tr"  # training goes to the training worker only
    result = done.result
    assert result["epochs_run"] == 4 and result["device"] == "cpu"
    assert result["test_accuracy"] > result["baseline_accuracy"]
    assert done.progress is not None and done.progress.model_extra is not None
    assert done.progress.model_extra["epoch"] == 4
    assert hashlib.sha256(model_bytes).hexdigest() == result["model_sha256"]
    assert artifacts["model.npz"].sha256 == result["model_sha256"]
    assert "checkpoint.pt" in artifacts  # saved every epoch under the lease
    TrainedModel.from_bytes(model_bytes)  # a usable model, read without pickle


async def test_a_backtest_trades_a_trained_model(cluster: Cluster) -> None:
    await _with_dataset(cluster)
    await cluster.start_worker("bt", worker_type="backtesting")
    await cluster.start_worker("tr", worker_type="training")
    await cluster.wait_workers("bt", "tr")
    async with cluster.client() as client:
        trained = await _train(client)
        op = await client.submit(
            "backtesting",
            {
                "symbol": "SYN",
                "timeframe": "1h",
                "strategy": "model",
                "model_operation_id": trained.operation_id,
                "allow_short": True,
            },
        )
        done = await client.wait(op.operation_id, timeout_s=60)
    assert done.status == "completed", done.error
    assert done.worker_id == "bt"
    assert done.result["num_trades"] > 0 and done.result["bars"] == 5000


async def test_a_model_that_fails_its_hash_check_is_refused(cluster: Cluster) -> None:
    await _with_dataset(cluster)
    await cluster.start_worker("bt", worker_type="backtesting")
    await cluster.start_worker("tr", worker_type="training")
    await cluster.wait_workers("bt", "tr")
    async with cluster.client() as client:
        trained = await _train(client)
        stored = cluster.data_dir / "artifacts" / trained.result["model_sha256"]
        tampered = bytearray(stored.read_bytes())
        tampered[-1] ^= 0xFF  # one bit of the weights changed on the backend's disk
        stored.write_bytes(bytes(tampered))
        op = await client.submit(
            "backtesting",
            {
                "symbol": "SYN",
                "timeframe": "1h",
                "strategy": "model",
                "model_operation_id": trained.operation_id,
            },
        )
        done = await client.wait(op.operation_id, timeout_s=60)
    assert done.status == "failed" and done.error is not None
    assert "failed its hash check" in done.error.message and "refused" in done.error.message


async def test_a_backtest_of_a_missing_model_fails_saying_so(cluster: Cluster) -> None:
    await _with_dataset(cluster, bars=500)
    await cluster.start_worker("bt", worker_type="backtesting")
    await cluster.wait_workers("bt")
    async with cluster.client() as client:
        op = await client.submit(
            "backtesting",
            {
                "symbol": "SYN",
                "timeframe": "1h",
                "strategy": "model",
                "model_operation_id": "op_000000000000000000000000",
            },
        )
        done = await client.wait(op.operation_id, timeout_s=60)
    assert done.status == "failed" and done.error is not None
    assert "has no artifact 'model.npz'" in done.error.message


async def test_training_resumes_from_its_checkpoint_after_its_worker_is_sigkilled(
    cluster: Cluster,
) -> None:
    await _with_dataset(cluster, bars=20_000)
    long_run = {"epochs": 25, "patience": 25, "seed": 8}
    await cluster.start_worker("tr-a", worker_type="training")
    await cluster.wait_workers("tr-a")
    async with cluster.client() as client:
        op = await client.submit("training", TRAINING | long_run)

        async def checkpointed() -> OperationView | None:
            view = await client.get(op.operation_id)
            names = {a.name for a in (await client.artifacts(op.operation_id)).items}
            epoch = (view.progress.model_extra or {}).get("epoch", 0) if view.progress else 0
            return view if "checkpoint.pt" in names and epoch >= 3 else None

        running = await wait_for(checkpointed, timeout_s=60)
        assert running.attempt == 1 and running.worker_id == "tr-a"
        cluster.workers["tr-a"].signal(signal.SIGKILL)
        await cluster.start_worker("tr-b", worker_type="training")
        done = await client.wait(op.operation_id, timeout_s=120)
        uninterrupted = await _train(client, **long_run)
    assert done.status == "completed", done.error
    assert done.attempt == 2 and done.worker_id == "tr-b"
    resumed_from = done.result["resumed_from_epoch"]
    assert resumed_from is not None and 3 <= resumed_from < 25
    assert done.result["epochs_run"] == 25
    # deterministic on the CPU: the resumed run ends with the model of an uninterrupted one
    assert uninterrupted.result["resumed_from_epoch"] is None
    assert done.result["model_sha256"] == uninterrupted.result["model_sha256"]
    assert done.result["test_accuracy"] == uninterrupted.result["test_accuracy"]


async def test_a_training_worker_reports_progress_every_epoch_while_it_runs(
    cluster: Cluster,
) -> None:
    await _with_dataset(cluster, bars=20_000)
    await cluster.start_worker("tr", worker_type="training")
    await cluster.wait_workers("tr")
    epochs_seen: set[int] = set()
    async with cluster.client() as client:
        op = await client.submit("training", TRAINING | {"epochs": 12, "patience": 12})
        while (view := await client.get(op.operation_id)).status in ("pending", "running"):
            if view.progress is not None and view.progress.model_extra:
                epochs_seen.add(view.progress.model_extra.get("epoch", 0))
            await asyncio.sleep(0.02)
    assert view.status == "completed"
    assert len(epochs_seen - {0}) >= 3  # seen moving, epoch by epoch
    assert np.isfinite(view.result["validation_loss"])


async def test_training_and_a_model_backtest_from_the_cli(cluster: Cluster) -> None:
    await _with_dataset(cluster, bars=3000)
    await cluster.start_worker("bt", worker_type="backtesting")
    await cluster.start_worker("tr", worker_type="training")
    await cluster.wait_workers("bt", "tr")

    base = ("submit", "training", "--symbol", "SYN", "--timeframe", "1h")
    bad_device = cluster.cli(*base, "--device", "tpu")
    assert bad_device.returncode == 2 and "device: Input should be 'auto'" in bad_device.stderr
    bad_layers = cluster.cli(*base, "--hidden", "32,wide")
    assert bad_layers.returncode == 2 and "hidden_sizes.1" in bad_layers.stderr
    trained = cluster.cli(*base, "--epochs", "3", "--hidden", "8", "--wait")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    for figure in ("test_accuracy", "baseline_accuracy", "confusion_matrix", "best_epoch"):
        assert figure in trained.stdout
    operation_id = trained.stdout.split()[1]
    no_model = cluster.cli(
        "submit", "backtest", "--symbol", "SYN", "--timeframe", "1h", "--strategy", "model"
    )
    assert no_model.returncode == 2 and "needs model_operation_id" in no_model.stderr
    traded = cluster.cli(
        "submit",
        "backtest",
        "--symbol",
        "SYN",
        "--timeframe",
        "1h",
        "--strategy",
        "model",
        "--model",
        operation_id,
        "--param",
        "threshold=0.52",
        "--wait",
    )
    assert traded.returncode == 0, traded.stdout + traded.stderr
    assert "total_return" in traded.stdout and "completed" in traded.stdout
