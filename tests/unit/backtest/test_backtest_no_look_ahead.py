"""No look-ahead: what happens after bar t never changes a position or the equity up to t."""

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workfleet.operations.backtest.bars import Bars
from workfleet.operations.backtest.engine import Execution, simulate
from workfleet.operations.backtest.strategies import (
    STRATEGIES,
    BollingerBreakoutParams,
    RsiMeanReversionParams,
    SmaCrossoverParams,
)

PRICES = st.floats(min_value=1.0, max_value=1_000.0, allow_nan=False, allow_infinity=False)
SETTINGS: dict[str, st.SearchStrategy[Any]] = {
    "sma_crossover": st.integers(1, 6).flatmap(
        lambda fast: st.builds(
            SmaCrossoverParams, fast=st.just(fast), slow=st.integers(fast + 1, fast + 8)
        )
    ),
    "rsi_mean_reversion": st.builds(
        RsiMeanReversionParams,
        period=st.integers(2, 8),
        lower=st.floats(5, 49),
        upper=st.floats(51, 95),
    ),
    "bollinger_breakout": st.builds(
        BollingerBreakoutParams, period=st.integers(2, 8), num_std=st.floats(0.1, 3.0)
    ),
}


def bars_of(opens: list[float], closes: list[float]) -> Bars:
    open_ = np.array(opens, dtype=np.float64)
    close = np.array(closes, dtype=np.float64)
    start = np.datetime64("2024-01-01T00:00", "ns")
    return Bars(
        timestamps=start + np.arange(len(close)) * np.timedelta64(1, "m"),
        open=open_,
        high=np.maximum(open_, close),
        low=np.minimum(open_, close),
        close=close,
        volume=np.ones_like(close),
    )


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@settings(max_examples=75, deadline=None)
@given(data=st.data())
def test_changing_bars_after_t_never_changes_positions_or_equity_up_to_t(
    name: str, data: st.DataObject
) -> None:
    count = data.draw(st.integers(2, 60), label="bars")
    opens = data.draw(st.lists(PRICES, min_size=count, max_size=count), label="opens")
    closes = data.draw(st.lists(PRICES, min_size=count, max_size=count), label="closes")
    t = data.draw(st.integers(0, count - 1), label="t")
    later = count - t - 1
    other_opens = data.draw(st.lists(PRICES, min_size=later, max_size=later), label="new opens")
    other_closes = data.draw(st.lists(PRICES, min_size=later, max_size=later), label="new closes")
    strategy = STRATEGIES[name]
    chosen = data.draw(SETTINGS[name], label="settings")
    allow_short = data.draw(st.booleans(), label="allow_short")
    execution = Execution(1000.0, commission=0.001, slippage=0.0005, position_fraction=0.7)

    outcomes = []
    for bars in (
        bars_of(opens, closes),
        bars_of(opens[: t + 1] + other_opens, closes[: t + 1] + other_closes),
    ):
        positions = strategy.positions(bars, chosen, allow_short)
        outcomes.append((positions, simulate(bars.open, bars.close, positions, execution)))

    (positions, run), (positions_changed, run_changed) = outcomes
    assert positions[: t + 1].tolist() == positions_changed[: t + 1].tolist()
    assert run.equity[: t + 1].tolist() == run_changed.equity[: t + 1].tolist()
