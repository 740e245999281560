"""`backtesting` parameters: DESIGN §3.1 wire names and defaults, and clear refusals."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from workfleet.operations.backtest.params import BacktestParams

MINIMAL = {"symbol": "BTCUSD", "timeframe": "1h", "strategy": "sma_crossover"}


def test_defaults_are_those_of_the_design_and_of_the_strategy() -> None:
    params = BacktestParams.model_validate(MINIMAL)
    assert params.model_dump(mode="json") == {
        "symbol": "BTCUSD",
        "timeframe": "1h",
        "start": None,
        "end": None,
        "strategy": "sma_crossover",
        "strategy_params": {"fast": 10, "slow": 30},
        "initial_capital": 10_000.0,
        "commission": 0.0,
        "slippage": 0.0,
        "position_fraction": 1.0,
        "allow_short": False,
        "model_operation_id": None,
    }


def test_an_unknown_strategy_is_refused_naming_every_strategy_and_its_parameters() -> None:
    with pytest.raises(ValidationError) as refused:
        BacktestParams.model_validate({**MINIMAL, "strategy": "moon_phase"})
    message = str(refused.value)
    assert "unknown strategy 'moon_phase'" in message
    assert "sma_crossover(fast (integer, 1 <= fast <= 10000, default 10)" in message
    assert "rsi_mean_reversion(period (integer, 2 <= period <= 10000, default 14)" in message
    assert "lower (number, 0 <= lower <= 100, default 30.0)" in message
    assert "bollinger_breakout(period" in message
    assert "num_std (number, 0 < num_std <= 10, default 2.0)" in message


@pytest.mark.parametrize(
    ("strategy_params", "problem"),
    [
        ({"fast": 30, "slow": 10}, "fast (30) must be less than slow (10)"),
        ({"fast": 0}, "fast: Input should be greater than or equal to 1"),
        ({"fsat": 5}, "fsat: Extra inputs are not permitted"),
        ({"fast": "many"}, "fast: Input should be a valid integer"),
    ],
)
def test_invalid_strategy_parameters_are_refused_naming_the_valid_ones(
    strategy_params: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        BacktestParams.model_validate({**MINIMAL, "strategy_params": strategy_params})
    message = str(refused.value)
    assert f"invalid parameters for sma_crossover: {problem}" in message
    assert "it takes sma_crossover(fast (integer" in message
    assert "with fast < slow" in message


def test_strategy_parameters_given_as_text_are_read_as_numbers() -> None:
    params = BacktestParams.model_validate(
        {**MINIMAL, "strategy": "rsi_mean_reversion", "strategy_params": {"period": "7"}}
    )
    assert params.strategy_params == {"period": 7, "lower": 30.0, "upper": 70.0}


@pytest.mark.parametrize(
    "change",
    [
        {"unknown_field": 1},
        {"timeframe": "2h"},
        {"initial_capital": 0},
        {"commission": -0.001},
        {"slippage": 1.0},
        {"position_fraction": 1.5},
        {"position_fraction": 0},
        {"initial_capital": float("inf")},
        {"start": "2024-02-01", "end": "2024-01-01"},
    ],
)
def test_parameters_outside_their_range_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BacktestParams.model_validate({**MINIMAL, **change})


def test_dates_without_a_zone_are_utc() -> None:
    params = BacktestParams.model_validate({**MINIMAL, "start": "2024-01-01", "end": "2024-03-01"})
    assert params.start == datetime(2024, 1, 1, tzinfo=UTC)
    assert params.end == datetime(2024, 3, 1, tzinfo=UTC)
