"""The fill rule of DESIGN §3.1, one rule per test, on a few bars worked out by hand.

Every case starts with 1000 in cash. Positions are given directly (a strategy's output), so
p_t held over bar t+1 reads: positions [1, 1, 0] -> held [0, 1, 1].
"""

from collections.abc import Sequence

import numpy as np
import pytest

from workfleet.operations.backtest.engine import Execution, Simulation, simulate
from workfleet.operations.backtest.trades import round_trips


def simulated(
    opens: Sequence[float], closes: Sequence[float], positions: Sequence[int], **costs: float
) -> Simulation:
    return simulate(
        np.array(opens, dtype=np.float64),
        np.array(closes, dtype=np.float64),
        np.array(positions, dtype=np.int8),
        Execution(initial_capital=1000.0, **costs),
    )


def test_a_signal_at_the_close_of_bar_t_fills_at_the_open_of_bar_t_plus_one() -> None:
    # p_0 = 1 is decided at close_0 = 10 but filled at open_1 = 20: 1000 / 20 = 50 units
    # (100 units had it filled at the signal's close). Equity = 0 cash + 50 * close.
    run = simulated(
        opens=[10, 20, 22, 24, 25], closes=[10, 21, 23, 24, 26], positions=[1, 1, 1, 1, 1]
    )
    assert run.fills.bar.tolist() == [1]
    assert run.fills.price.tolist() == [20.0]
    assert run.held.tolist() == [0, 1, 1, 1, 1]
    assert run.units.tolist() == [0, 50, 50, 50, 50]
    assert run.equity.tolist() == pytest.approx([1000, 1050, 1150, 1200, 1300])


@pytest.mark.parametrize(
    ("position", "fill_prices", "final_cash"),
    [
        # long: buy 1000/100 = 10 at 100 * 1.01 = 101 -> cash -10;
        # sell 10 at 120 * 0.99 = 118.8 -> cash -10 + 1188 = 1178
        (1, [101.0, 118.8], 1178.0),
        # short: sell 10 at 100 * 0.99 = 99 -> cash 1990; buy back at 120 * 1.01 = 121.2 -> 778
        (-1, [99.0, 121.2], 778.0),
    ],
)
def test_slippage_raises_the_price_of_buys_and_lowers_the_price_of_sells(
    position: int, fill_prices: list[float], final_cash: float
) -> None:
    run = simulated(
        opens=[100, 100, 110, 120, 120],
        closes=[100, 105, 115, 120, 120],
        positions=[position, position, 0, 0, 0],
        slippage=0.01,
    )
    assert run.fills.bar.tolist() == [1, 3]
    assert run.fills.price.tolist() == pytest.approx(fill_prices)
    # the units are sized on the open, not on the slipped fill price
    assert run.units.tolist() == pytest.approx([0, 10 * position, 10 * position, 0, 0])
    assert run.cash[-1] == pytest.approx(final_cash)
    assert run.equity[-1] == pytest.approx(final_cash)


@pytest.mark.parametrize(
    ("position", "cash_after_each_fill"),
    [
        # buy 10 at 100: 1000 - 1000 - 0.001 * 1000 = -1; sell at 120: -1 + 1200 - 1.2 = 1197.8
        (1, [-1.0, 1197.8]),
        # sell 10 at 100: 1000 + 1000 - 1 = 1999; buy back at 120: 1999 - 1200 - 1.2 = 797.8
        (-1, [1999.0, 797.8]),
    ],
)
def test_commission_is_paid_from_cash_on_the_absolute_traded_notional(
    position: int, cash_after_each_fill: list[float]
) -> None:
    run = simulated(
        opens=[100, 100, 110, 120, 120],
        closes=[100, 105, 115, 120, 120],
        positions=[position, position, 0, 0, 0],
        commission=0.001,
    )
    assert run.cash[[1, 3]].tolist() == pytest.approx(cash_after_each_fill)
    assert run.fills.cash_flow.tolist() == pytest.approx(
        [cash_after_each_fill[0] - 1000, cash_after_each_fill[1] - cash_after_each_fill[0]]
    )


def test_position_fraction_exposes_that_share_of_equity() -> None:
    # 0.5 * 1000 / 100 = 5 units at bar 1's open, cash 500; equity = 500 + 5 * close
    run = simulated(
        opens=[100, 100, 110, 120, 130],
        closes=[100, 105, 115, 125, 130],
        positions=[1, 1, 1, 1, 1],
        position_fraction=0.5,
    )
    assert run.units.tolist() == [0, 5, 5, 5, 5]
    assert run.cash.tolist() == [1000, 500, 500, 500, 500]
    assert run.equity.tolist() == pytest.approx([1000, 1025, 1075, 1125, 1150])


def test_units_are_fractional_when_equity_does_not_divide_by_the_open() -> None:
    # 1000 / 300 = 3.333... units; equity at the last close = 3.333... * 320 = 1066.67
    run = simulated(opens=[300, 300, 310], closes=[300, 310, 320], positions=[1, 1, 1])
    assert run.units[1] == pytest.approx(10 / 3)
    assert run.cash[1] == pytest.approx(0.0, abs=1e-9)
    assert run.equity[-1] == pytest.approx(3200 / 3)


def test_no_rebalancing_happens_while_the_target_position_is_unchanged() -> None:
    # equity grows to 1150 but the 5 units bought with half of 1000 stay 5: one fill only
    # (a rebalance at bar 2's open would hold 0.5 * 1050 / 110 = 4.77 units)
    run = simulated(
        opens=[100, 100, 110, 120, 130],
        closes=[100, 105, 115, 125, 130],
        positions=[1, 1, 1, 1, 1],
        position_fraction=0.5,
    )
    assert run.fills.bar.tolist() == [1]
    assert run.units[1:].tolist() == [5, 5, 5, 5]


def test_a_flip_from_long_to_short_is_one_fill_that_opens_one_new_trade() -> None:
    # bar 1 open 100: buy 10, cash 0. Bar 3 open 110: equity 1100, target -1100/110 = -10,
    # trade -20, cash 0 + 20 * 110 = 2200. Equity at bar 4's close: 2200 - 10 * 105 = 1150.
    # Trades: long 10 from 100 to 110 (+100); short 10 from 110, open at the end, marked at
    # the last close 105 (+50).
    closes = [100, 104, 108, 107, 105]
    run = simulated(opens=[100, 100, 105, 110, 108], closes=closes, positions=[1, 1, -1, -1, -1])
    trips = round_trips(run.fills, np.array(closes, dtype=np.float64), commission=0.0)
    assert run.fills.bar.tolist() == [1, 3]
    assert run.units.tolist() == [0, 10, 10, -10, -10]
    assert run.equity.tolist() == pytest.approx([1000, 1040, 1080, 1130, 1150])
    assert len(trips) == 2
    assert trips.units.tolist() == [10, -10]
    assert trips.pnl.tolist() == pytest.approx([100, 50])


def test_a_flips_commission_is_shared_by_the_trade_it_closes_and_the_one_it_opens() -> None:
    # commission 0.001. Bar 1: buy 10 at 100, pay 1 -> cash -1.
    # Bar 3 open 110: equity -1 + 1100 = 1099, target -1099/110 = -9.990909 units, trade
    # -19.990909, notional -2199, commission 2.199 -> cash -1 + 2199 - 2.199 = 2195.801.
    # Long: 10 * (110 - 100) - 1 - 0.001 * 1100 = 97.9.
    # Short: entry 1099 - 1.099 = 1097.901 in; marked at 105: -9.990909 * 105 = -1049.04545
    # -> 48.85555. Together 146.75555 = final equity 2195.801 - 1049.04545 - 1000.
    closes = [100, 104, 108, 107, 105]
    run = simulated(
        opens=[100, 100, 105, 110, 108],
        closes=closes,
        positions=[1, 1, -1, -1, -1],
        commission=0.001,
    )
    trips = round_trips(run.fills, np.array(closes, dtype=np.float64), commission=0.001)
    assert run.cash[-1] == pytest.approx(2195.801)
    assert trips.pnl.tolist() == pytest.approx([97.9, 48.85555], abs=1e-5)
    assert run.equity[-1] == pytest.approx(1146.75555, abs=1e-5)


def test_a_position_open_at_the_end_is_closed_at_the_last_close_for_trade_statistics() -> None:
    # bar 2 open 100: buy 10, commission 1 -> cash -1. Still held at the end: closed at the
    # last close 112 without costs, like the equity: pnl = 10 * 112 - 1000 - 1 = 119.
    closes = [100, 100, 102, 108, 112]
    run = simulated(
        opens=[100, 100, 100, 105, 110], closes=closes, positions=[0, 1, 1, 1, 1], commission=0.001
    )
    trips = round_trips(run.fills, np.array(closes, dtype=np.float64), commission=0.001)
    assert len(trips) == 1
    assert trips.open_at_end.tolist() == [True]
    assert trips.entry_bar.tolist() == [2]
    assert trips.exit_bar.tolist() == [4]
    assert trips.exit_price.tolist() == [112.0]
    assert trips.pnl.tolist() == pytest.approx([119.0])
    assert run.equity[-1] == pytest.approx(1119.0)


def test_the_last_bars_signal_is_never_filled_for_want_of_a_next_open() -> None:
    run = simulated(opens=[100, 100, 100], closes=[100, 100, 100], positions=[0, 0, 1])
    assert run.fills.bar.tolist() == []
    assert run.equity.tolist() == [1000, 1000, 1000]
