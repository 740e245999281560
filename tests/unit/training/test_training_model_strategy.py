"""The backtest's `model` strategy: thresholds, no look-ahead, and its parameters."""

import numpy as np
import pytest
from pydantic import ValidationError

from workfleet.operations.backtest.bars import Bars, bars_from_frame
from workfleet.operations.backtest.params import BacktestParams
from workfleet.operations.backtest.run import run_backtest
from workfleet.operations.backtest.strategy_params import ModelStrategyParams
from workfleet.operations.marketdata import generate
from workfleet.operations.training.features import FEATURE_NAMES, WARMUP
from workfleet.operations.training.model_file import TrainedModel
from workfleet.operations.training.signals import model_positions

WIDTH = len(FEATURE_NAMES)


def constant_model(logit: float) -> TrainedModel:
    """P(up) = sigmoid(logit) on every defined row."""
    return TrainedModel(
        [(np.zeros((1, WIDTH)), np.array([logit]))],
        np.zeros(WIDTH),
        np.ones(WIDTH),
        FEATURE_NAMES,
        1,
    )


def momentum_model() -> TrainedModel:
    """Up when the last return was up: weight on log_return_lag0 only."""
    weight = np.zeros((1, WIDTH))
    weight[0, 0] = 50.0
    return TrainedModel([(weight, np.zeros(1))], np.zeros(WIDTH), np.ones(WIDTH), FEATURE_NAMES, 1)


@pytest.fixture(scope="module")
def bars() -> Bars:
    return bars_from_frame(generate(bars=400, timeframe="1h", seed=4))


@pytest.mark.parametrize(
    ("logit", "threshold", "allow_short", "expected"),
    [
        (1.0, 0.6, False, 1),  # P(up) = 0.73 > 0.6: long
        (1.0, 0.8, False, 0),  # 0.73 is between 0.2 and 0.8: flat
        (-1.0, 0.6, True, -1),  # 0.27 < 0.4: short
        (-1.0, 0.6, False, 0),  # ... or flat without shorts
    ],
)
def test_positions_follow_the_probability_and_the_threshold(
    bars: Bars, logit: float, threshold: float, allow_short: bool, expected: int
) -> None:
    positions = model_positions(
        bars, constant_model(logit), ModelStrategyParams(threshold=threshold), allow_short
    )
    assert (positions[:WARMUP] == 0).all()  # features undefined: flat
    assert (positions[WARMUP:] == expected).all()


def test_changing_bars_after_t_never_changes_positions_up_to_t(bars: Bars) -> None:
    frame = generate(bars=400, timeframe="1h", seed=4)
    close = frame.columns.get_loc("close")
    frame.iloc[250:, close] = frame.iloc[250:, close].to_numpy()[::-1]  # another future
    changed = bars_from_frame(frame)
    settings = ModelStrategyParams()
    before = model_positions(bars, momentum_model(), settings, True)
    after = model_positions(changed, momentum_model(), settings, True)
    np.testing.assert_array_equal(before[:250], after[:250])
    assert not np.array_equal(before, after)


def test_a_model_backtest_runs_through_the_engine(bars: Bars) -> None:
    frame = generate(bars=400, timeframe="1h", seed=4)
    params = BacktestParams(
        symbol="SYN",
        timeframe="1h",
        strategy="model",
        model_operation_id="op_1",
        allow_short=True,
    )
    outcome = run_backtest(frame, params, model=momentum_model())
    assert outcome.result["num_trades"] > 10
    with pytest.raises(ValueError, match="needs the trained model"):
        run_backtest(frame, params)


def test_the_model_strategy_needs_a_training_operation_and_only_it_takes_one() -> None:
    with pytest.raises(ValidationError, match="model strategy needs model_operation_id"):
        BacktestParams(symbol="S", timeframe="1h", strategy="model")
    with pytest.raises(ValidationError, match="for the model strategy only"):
        BacktestParams(
            symbol="S", timeframe="1h", strategy="sma_crossover", model_operation_id="op_1"
        )
    with pytest.raises(ValidationError, match="threshold"):
        BacktestParams(
            symbol="S",
            timeframe="1h",
            strategy="model",
            model_operation_id="op_1",
            strategy_params={"threshold": 0.3},
        )
    with pytest.raises(ValidationError, match="model_operation_id"):
        BacktestParams(symbol="S", timeframe="1h", strategy="model", model_operation_id="../x")
