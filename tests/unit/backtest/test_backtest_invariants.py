"""Invariants over arbitrary prices, positions and costs: the engine agrees with a bar-by-bar
reading of DESIGN §3.1, equity is always cash + units * close, and trade P&L adds up."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from workfleet.operations.backtest.engine import Execution, Simulation, simulate
from workfleet.operations.backtest.trades import round_trips

PRICES = st.floats(min_value=1.0, max_value=1_000.0, allow_nan=False, allow_infinity=False)
Market = tuple[list[float], list[float], list[int], Execution]  # opens, closes, positions


@st.composite
def markets(draw: st.DrawFn) -> Market:
    count = draw(st.integers(1, 50))
    opens = draw(st.lists(PRICES, min_size=count, max_size=count))
    closes = draw(st.lists(PRICES, min_size=count, max_size=count))
    positions = draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=count, max_size=count))
    execution = Execution(
        initial_capital=draw(st.floats(100.0, 1e6)),
        commission=draw(st.floats(0.0, 0.01)),
        slippage=draw(st.floats(0.0, 0.01)),
        position_fraction=draw(st.floats(0.01, 1.0)),
    )
    return opens, closes, positions, execution


def bar_by_bar(
    opens: list[float], closes: list[float], positions: list[int], execution: Execution
) -> tuple[list[float], list[float], list[float]]:
    """DESIGN §3.1 read literally, one bar at a time: cash, units and equity at each close."""
    cash, units, held = execution.initial_capital, 0.0, 0
    cash_at, units_at, equity_at = [], [], []
    for t, (open_price, close_price) in enumerate(zip(opens, closes, strict=True)):
        target = positions[t - 1] if t > 0 else 0
        if target != held:
            equity = cash + units * open_price
            target_units = target * execution.position_fraction * equity / open_price
            trade = target_units - units
            fill = open_price * (1 + execution.slippage * np.sign(trade))
            cash -= trade * fill + execution.commission * abs(trade * fill)
            units, held = target_units, target
        cash_at.append(cash)
        units_at.append(units)
        equity_at.append(cash + units * close_price)
    return cash_at, units_at, equity_at


def run_of(market: Market) -> Simulation:
    opens, closes, positions, execution = market
    return simulate(
        np.array(opens, dtype=np.float64),
        np.array(closes, dtype=np.float64),
        np.array(positions, dtype=np.int8),
        execution,
    )


@settings(max_examples=200, deadline=None)
@given(market=markets())
def test_the_engine_agrees_with_a_bar_by_bar_reading_of_the_fill_rule(
    market: Market,
) -> None:
    run = run_of(market)
    cash, units, equity = bar_by_bar(*market)
    scale = market[3].initial_capital * 1e-9
    np.testing.assert_allclose(run.cash, cash, rtol=1e-9, atol=scale)
    np.testing.assert_allclose(run.units, units, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(run.equity, equity, rtol=1e-9, atol=scale)


@settings(max_examples=200, deadline=None)
@given(market=markets())
def test_equity_is_cash_plus_units_times_close_at_every_bar(
    market: Market,
) -> None:
    run = run_of(market)
    closes = np.array(market[1], dtype=np.float64)
    assert run.equity.tolist() == (run.cash + run.units * closes).tolist()


@settings(max_examples=200, deadline=None)
@given(market=markets())
def test_the_trades_pnl_adds_up_to_the_change_in_equity(
    market: Market,
) -> None:
    _, closes, _, execution = market
    run = run_of(market)
    trips = round_trips(run.fills, np.array(closes, dtype=np.float64), execution.commission)
    total = float(run.equity[-1]) - execution.initial_capital
    assert math.isclose(
        float(trips.pnl.sum()), total, rel_tol=1e-6, abs_tol=1e-6 * execution.initial_capital
    )
