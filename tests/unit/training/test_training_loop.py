"""The training loop: deterministic, resumable to the same model, stopped early, cancellable."""

from typing import Any

import numpy as np
import pytest
import torch

from workfleet.operations.backtest.bars import Bars, bars_from_frame
from workfleet.operations.context import Cancelled
from workfleet.operations.marketdata import generate
from workfleet.operations.training.evaluation import chronological_split
from workfleet.operations.training.features import WARMUP, samples
from workfleet.operations.training.params import TrainingParams
from workfleet.operations.training.train import Checkpoints, TrainingOutcome, pick_device, train


@pytest.fixture(scope="module")
def bars() -> Bars:
    # a planted lag-1 autocorrelation: something a model can learn
    return bars_from_frame(generate(bars=6000, timeframe="1h", seed=11, autocorrelation=0.3))


def params(**overrides: Any) -> TrainingParams:
    values: dict[str, Any] = {
        "symbol": "SYN",
        "timeframe": "1h",
        "epochs": 6,
        "batch_size": 128,
        "hidden_sizes": [16],
        "seed": 5,
        "device": "cpu",
    }
    return TrainingParams(**(values | overrides))


def run(p: TrainingParams, bars: Bars, **kwargs: Any) -> TrainingOutcome:
    kwargs.setdefault("progress", lambda **_: None)
    kwargs.setdefault("cancelled", lambda: False)
    return train(p, bars, **kwargs)


def test_it_learns_the_planted_pattern_and_beats_the_baseline(bars: Bars) -> None:
    outcome = run(params(epochs=10), bars)
    result = outcome.result
    assert result["test_accuracy"] > result["baseline_accuracy"] + 0.05
    assert result["device"] == "cpu" and result["resumed_from_epoch"] is None
    tn, fp = result["confusion_matrix"][0]
    fn, tp = result["confusion_matrix"][1]
    assert tn + fp + fn + tp == result["samples"]["test"]
    assert result["test_accuracy"] == pytest.approx((tp + tn) / result["samples"]["test"])
    # the first test sample is bar WARMUP + train + validation
    first_test = WARMUP + result["samples"]["train"] + result["samples"]["validation"]
    assert (
        result["test_start"] == f"{np.datetime_as_string(bars.timestamps[first_test], unit='s')}Z"
    )


def test_the_same_seed_gives_the_same_model(bars: Bars) -> None:
    first, second = run(params(), bars), run(params(), bars)
    assert first.result == second.result
    assert first.model.to_bytes() == second.model.to_bytes()
    assert run(params(seed=6), bars).model.to_bytes() != first.model.to_bytes()


def test_normalisation_is_fitted_on_the_training_split_only(bars: Bars) -> None:
    outcome = run(params(epochs=1), bars)
    features, labels = samples(bars)
    split = chronological_split(len(labels), 0.15, 0.15)
    np.testing.assert_allclose(outcome.model.mean, features[split.train].mean(axis=0))
    assert not np.allclose(outcome.model.mean, features.mean(axis=0))


def test_progress_is_reported_every_epoch(bars: Bars) -> None:
    seen: list[dict[str, Any]] = []
    run(params(epochs=3), bars, progress=lambda **p: seen.append(p))
    epochs = [p for p in seen if "train_loss" in p]
    assert [p["epoch"] for p in epochs] == [1, 2, 3]
    assert epochs[-1]["percentage"] == 100.0
    assert epochs[0]["message"].startswith("epoch 1/3: train loss")
    for p in epochs:
        assert p["validation_loss"] > 0 and 0 <= p["validation_accuracy"] <= 1


def test_a_resumed_run_ends_with_the_model_an_uninterrupted_run_makes(bars: Bars) -> None:
    uninterrupted = run(params(), bars)

    saved: list[bytes] = []
    epochs_seen: list[int] = []

    def interrupt_after_three() -> bool:  # the worker dies during epoch 4
        return len(saved) >= 3

    with pytest.raises(Cancelled):
        run(
            params(),
            bars,
            progress=lambda **p: epochs_seen.append(p.get("epoch", 0)),
            cancelled=interrupt_after_three,
            checkpoints=Checkpoints(saved.append, lambda: None),
        )
    assert len(saved) == 3

    resumed_progress: list[dict[str, Any]] = []
    resumed = run(
        params(device="auto"),  # another worker, maybe another device: the same checkpoint
        bars,
        progress=lambda **p: resumed_progress.append(p),
        checkpoints=Checkpoints(saved.append, lambda: saved[2]),
    )
    assert resumed.result["resumed_from_epoch"] == 3
    assert "resumed after epoch 3" in resumed_progress[0]["message"]
    assert [p["epoch"] for p in resumed_progress[1:]] == [4, 5, 6]
    assert resumed.model.to_bytes() == uninterrupted.model.to_bytes()
    unchanged = {k: v for k, v in resumed.result.items() if k != "resumed_from_epoch"}
    assert unchanged == {k: v for k, v in uninterrupted.result.items() if k != "resumed_from_epoch"}


def test_a_checkpoint_of_other_parameters_is_refused(bars: Bars) -> None:
    saved: list[bytes] = []
    run(params(epochs=1), bars, checkpoints=Checkpoints(saved.append, lambda: None))
    with pytest.raises(ValueError, match="not made by these parameters"):
        run(
            params(learning_rate=0.5), bars, checkpoints=Checkpoints(saved.append, lambda: saved[0])
        )


def test_training_stops_early_when_validation_loss_stops_improving(bars: Bars) -> None:
    # a step size this large makes the validation loss jump about instead of improving
    result = run(params(epochs=200, learning_rate=5.0, patience=2), bars).result
    assert result["stopped_early"] is True
    assert result["epochs_run"] == result["best_epoch"] + 2
    assert result["epochs_run"] < 200


def test_a_cancel_stops_within_the_epoch(bars: Bars) -> None:
    calls = 0

    def cancelled() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5  # a few batches in

    with pytest.raises(Cancelled):
        run(params(epochs=50), bars, cancelled=cancelled)
    assert calls == 6


def test_too_few_bars_fail_with_a_clear_message() -> None:
    few = bars_from_frame(generate(bars=80, timeframe="1h", seed=1))
    with pytest.raises(ValueError, match="each part needs at least 10"):
        run(params(), few)


def test_auto_picks_the_cpu_when_there_is_no_accelerator_and_a_missing_one_is_an_error() -> None:
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator")
    assert pick_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="'cuda' was asked for, but this worker has none"):
        pick_device("cuda")
