"""Result figures on equity curves worked out by hand, and None where one is undefined."""

import json
import math
import statistics
from collections.abc import Sequence

import numpy as np
import pytest

from workfleet.operations.backtest.engine import Execution, simulate
from workfleet.operations.backtest.metrics import performance
from workfleet.operations.backtest.trades import round_trips


def result_of(
    opens: Sequence[float], closes: Sequence[float], positions: Sequence[int]
) -> dict[str, float | int | None]:
    """Daily bars from 2024-01-01, 1000 of capital, no costs."""
    close = np.array(closes, dtype=np.float64)
    run = simulate(
        np.array(opens, dtype=np.float64),
        close,
        np.array(positions, dtype=np.int8),
        Execution(initial_capital=1000.0),
    )
    days = np.datetime64("2024-01-01", "ns") + np.arange(len(close)) * np.timedelta64(1, "D")
    return performance(run, round_trips(run.fills, close, 0.0), days, 1000.0)


def test_the_figures_of_one_losing_long_trade() -> None:
    # buy 10 at bar 1's open (100), sell at bar 4's open (90): equity 1000 1100 1200 900 900
    result = result_of(
        opens=[100, 100, 110, 120, 90], closes=[100, 110, 120, 90, 90], positions=[1, 1, 1, 0, 0]
    )
    returns = [0.1, 1200 / 1100 - 1, -0.25, 0.0]
    years = 4 / 365.25  # four days from the first bar to the last
    per_year = 5 / years  # bars / years spanned
    annualized = 0.9 ** (1 / years) - 1
    mean = statistics.fmean(returns)
    assert result == {
        "total_return": pytest.approx(-0.1),
        "annualized_return": pytest.approx(annualized),
        "sharpe": pytest.approx(mean / statistics.stdev(returns) * math.sqrt(per_year)),
        # downside deviation: sqrt(mean of [0, 0, 0.25 ** 2, 0]) = 0.125
        "sortino": pytest.approx(mean / 0.125 * math.sqrt(per_year)),
        "calmar": pytest.approx(annualized / 0.25),
        "max_drawdown": pytest.approx(0.25),  # from the 1200 peak to 900
        "win_rate": 0.0,
        "profit_factor": 0.0,  # no gross profit over a gross loss of 100
        "num_trades": 1,
        "avg_trade_return": pytest.approx(-0.1),  # -100 on 1000 committed
        "exposure": pytest.approx(0.6),  # bars 1, 2 and 3 of 5
        "bars": 5,
    }


def test_figures_without_trades_or_variation_are_none_not_nan() -> None:
    result = result_of(opens=[100] * 4, closes=[100] * 4, positions=[0] * 4)
    assert result == {
        "total_return": 0.0,
        "annualized_return": 0.0,
        "sharpe": None,
        "sortino": None,
        "calmar": None,
        "max_drawdown": 0.0,
        "win_rate": None,
        "profit_factor": None,
        "num_trades": 0,
        "avg_trade_return": None,
        "exposure": 0.0,
        "bars": 4,
    }


def test_profit_factor_is_none_when_no_trade_lost() -> None:
    result = result_of(opens=[100, 100, 120], closes=[100, 110, 130], positions=[1, 1, 1])
    assert result["win_rate"] == 1.0
    assert result["profit_factor"] is None


def test_a_single_bar_spans_no_time_so_nothing_is_annualized() -> None:
    result = result_of(opens=[100], closes=[100], positions=[1])
    assert result["annualized_return"] is None
    assert result["sharpe"] is None
    assert result["sortino"] is None
    assert result["bars"] == 1


def test_a_ruined_account_reports_finite_figures() -> None:
    # short 10 at 100 (cash 2000), the price triples: equity 2000 - 10 * 300 = -1000
    result = result_of(opens=[100, 100, 300], closes=[100, 300, 300], positions=[-1, -1, -1])
    assert result["total_return"] == pytest.approx(-2.0)
    assert result["annualized_return"] == -1.0
    assert result["max_drawdown"] == pytest.approx(2.0)
    json.dumps(result, allow_nan=False)
