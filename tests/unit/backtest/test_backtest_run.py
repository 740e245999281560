"""`run_backtest`: a frame and parameters in; result, equity curve, trades, progress, cancel."""

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workfleet.operations.backtest.params import BacktestParams
from workfleet.operations.backtest.run import run_backtest
from workfleet.operations.context import Cancelled


def random_walk(bars: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))
    open_ = np.concatenate(([100.0], close[:-1]))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close),
            "low": np.minimum(open_, close),
            "close": close,
            "volume": 1.0,
        },
        index=pd.date_range("2024-01-01", periods=bars, freq="1h", tz="UTC"),
    )


def params(**changes: Any) -> BacktestParams:
    return BacktestParams.model_validate(
        {"symbol": "X", "timeframe": "1h", "strategy": "sma_crossover", **changes}
    )


def test_a_backtest_returns_json_ready_results_trades_and_the_equity_curve() -> None:
    frame = random_walk(500)
    outcome = run_backtest(frame, params(commission=0.001, slippage=0.0005))
    json.dumps(outcome.result, allow_nan=False)
    json.dumps(outcome.trades, allow_nan=False)
    assert outcome.result["bars"] == 500
    assert outcome.result["num_trades"] == len(outcome.trades) > 0
    utc_times = frame.index.tz_localize(None).to_numpy()
    assert np.array_equal(outcome.equity_curve.timestamps, utc_times)
    assert outcome.equity_curve.equity[0] == 10_000.0
    total_pnl = float(outcome.equity_curve.equity[-1]) - 10_000.0
    assert sum(trade["pnl"] for trade in outcome.trades) == pytest.approx(total_pnl)
    first = outcome.trades[0]
    assert first["entry_time"] == frame.index[first["entry_bar"]].strftime("%Y-%m-%dT%H:%M:%SZ")


def test_without_allow_short_no_trade_is_short() -> None:
    long_only = run_backtest(random_walk(500), params())
    with_shorts = run_backtest(random_walk(500), params(allow_short=True))
    assert {trade["side"] for trade in long_only.trades} == {"long"}
    assert {trade["side"] for trade in with_shorts.trades} == {"long", "short"}


def test_bars_may_carry_their_timestamps_in_a_column() -> None:
    frame = random_walk(200)
    as_column = frame.reset_index(names="timestamp")
    assert run_backtest(as_column, params()).result == run_backtest(frame, params()).result


def test_progress_reports_bars_processed_up_to_all_of_them_with_the_running_pnl() -> None:
    reports: list[dict[str, Any]] = []
    outcome = run_backtest(random_walk(1_000), params(), progress=lambda **r: reports.append(r))
    assert 2 <= len(reports) <= 10
    assert [r["bars_processed"] for r in reports] == sorted(r["bars_processed"] for r in reports)
    assert {r["bars_total"] for r in reports} == {1_000}
    assert reports[-1]["bars_processed"] == 1_000
    assert reports[-1]["percentage"] == 100.0
    final_pnl = float(outcome.equity_curve.equity[-1]) - 10_000.0
    assert reports[-1]["running_pnl"] == pytest.approx(final_pnl)


def test_a_cancel_requested_before_the_backtest_stops_it() -> None:
    with pytest.raises(Cancelled):
        run_backtest(random_walk(100), params(), cancelled=lambda: True)


def test_a_cancel_requested_while_simulating_stops_it_at_the_next_checkpoint() -> None:
    reports: list[dict[str, Any]] = []
    with pytest.raises(Cancelled):
        run_backtest(
            random_walk(1_000),
            params(),
            progress=lambda **r: reports.append(r),
            cancelled=lambda: bool(reports),
        )
    assert len(reports) == 1


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda frame: frame.drop(columns="volume"), "lack the column.s. volume"),
        (lambda frame: frame.iloc[::-1], "strictly increasing"),
        (lambda frame: frame.iloc[:0], "no bars"),
        (lambda frame: frame.assign(open=-1.0), "must be positive"),
        (lambda frame: frame.reset_index(drop=True), "must be datetimes"),
    ],
)
def test_bars_that_cannot_be_backtested_are_refused_with_the_reason(
    damage: Any, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        run_backtest(damage(random_walk(50)), params())


def test_timestamps_in_another_zone_are_the_same_instants_in_utc() -> None:
    frame = random_walk(100)
    elsewhere = frame.tz_convert("America/New_York")
    outcome = run_backtest(elsewhere, params())
    assert np.array_equal(outcome.equity_curve.timestamps, frame.index.tz_localize(None).to_numpy())
    assert outcome.result == run_backtest(frame, params()).result
