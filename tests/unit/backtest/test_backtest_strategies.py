"""Strategies: their rules on series worked out by hand, warm-up, and long-only mode."""

from typing import Any

import numpy as np
import pytest

from workfleet.operations.backtest.bars import Bars
from workfleet.operations.backtest.strategies import (
    STRATEGIES,
    BollingerBreakoutParams,
    RsiMeanReversionParams,
    SmaCrossoverParams,
    bollinger_breakout,
    rsi_mean_reversion,
    sma_crossover,
    wilder_rsi,
)


def bars_of(closes: list[float] | np.ndarray[Any, Any]) -> Bars:
    close = np.asarray(closes, dtype=np.float64)
    start = np.datetime64("2024-01-01T00:00", "ns")
    return Bars(
        timestamps=start + np.arange(len(close)) * np.timedelta64(1, "m"),
        open=close,
        high=close,
        low=close,
        close=close,
        volume=np.ones_like(close),
    )


@pytest.mark.parametrize(
    ("allow_short", "expected"),
    [(False, [0, 0, 1, 1, 0, 0, 1, 1]), (True, [0, 0, 1, 1, -1, -1, 1, 1])],
)
def test_sma_crossover_is_long_while_the_fast_average_is_above_the_slow_one(
    allow_short: bool, expected: list[int]
) -> None:
    # SMA2 from bar 2: 2.5 2.5 1.5 1.5 2.5 3.5; SMA3: 2 2.33 2 1.67 2 3 -> above, above,
    # below, below, above, above
    bars = bars_of([1, 2, 3, 2, 1, 2, 3, 4])
    positions = sma_crossover(bars, SmaCrossoverParams(fast=2, slow=3), allow_short)
    assert positions.tolist() == expected


def test_wilder_rsi_seeds_with_a_simple_mean_then_smooths_by_one_period() -> None:
    # changes 1 -1 2 1 -1 6. Bar 3: gain (1+0+2)/3 = 1, loss 1/3 -> RSI 100 * 1 / (4/3) = 75.
    # Bar 4: gain (2*1 + 1)/3 = 1, loss (2/3)/3 = 2/9 -> 900/11.
    # Bar 5: gain 2/3, loss (4/9 + 1)/3 = 13/27 -> 1800/31.
    # Bar 6: gain (4/3 + 6)/3 = 22/9, loss (26/27)/3 = 26/81 -> 100 * 198 / 224.
    rsi = wilder_rsi(np.array([44, 45, 44, 46, 47, 46, 52], dtype=np.float64), period=3)
    assert rsi.tolist() == pytest.approx([75, 900 / 11, 1800 / 31, 19800 / 224])


def test_wilder_rsi_is_100_without_losses_and_50_without_any_move() -> None:
    assert wilder_rsi(np.array([1, 2, 3, 4, 5], dtype=np.float64), 3).tolist() == [100, 100]
    assert wilder_rsi(np.array([5, 5, 5, 5, 5], dtype=np.float64), 3).tolist() == [50, 50]


@pytest.mark.parametrize(
    ("allow_short", "expected"),
    [(False, [0, 0, 0, 1, 1, 1, 0]), (True, [0, 0, 0, 1, 1, 1, -1])],
)
def test_rsi_mean_reversion_buys_below_lower_holds_between_and_sells_above_upper(
    allow_short: bool, expected: list[int]
) -> None:
    # RSI from bar 3 (see above): 75 < 76 buys; 81.8 is between 76 and 85 so the long is
    # held; 58.1 keeps it; 88.4 > 85 sells (or goes short)
    bars = bars_of([44, 45, 44, 46, 47, 46, 52])
    params = RsiMeanReversionParams(period=3, lower=76, upper=85)
    assert rsi_mean_reversion(bars, params, allow_short).tolist() == expected


@pytest.mark.parametrize(
    ("allow_short", "expected"),
    [(False, [0, 0, 0, 1, 1, 0, 0]), (True, [0, 0, 0, 1, 1, -1, -1])],
)
def test_bollinger_breakout_follows_a_close_outside_the_bands_and_holds_inside(
    allow_short: bool, expected: list[int]
) -> None:
    # 3-bar bands, 1 population std wide:
    # bar 2 [10 10 10]: bands 10/10, close 10 is on them, not outside: hold flat
    # bar 3 [10 10 13]: mean 11, std 1.414 -> upper 12.41 < 13: long
    # bar 4 [10 13 12]: mean 11.67, std 1.247 -> 10.42..12.91 holds 12: long held
    # bar 5 [13 12 9]: mean 11.33, std 1.700 -> lower 9.63 > 9: flat (short)
    # bar 6 [12 9 10]: mean 10.33, std 1.247 -> 9.09..11.58 holds 10: flat (short) held
    bars = bars_of([10, 10, 10, 13, 12, 9, 10])
    params = BollingerBreakoutParams(period=3, num_std=1.0)
    assert bollinger_breakout(bars, params, allow_short).tolist() == expected


@pytest.mark.parametrize(
    ("name", "settings", "closes", "undefined_bars"),
    [
        # rising: the fast average is above the slow one as soon as the slow one exists
        ("sma_crossover", SmaCrossoverParams(fast=2, slow=4), list(range(1, 11)), 3),
        # falling: RSI 0 as soon as it exists, a buy
        ("rsi_mean_reversion", RsiMeanReversionParams(period=3), list(range(20, 10, -1)), 3),
        # rising by 1: the close is above mean + 1 std of its own window from the first window
        ("bollinger_breakout", BollingerBreakoutParams(period=3, num_std=1), list(range(10)), 2),
    ],
)
def test_a_strategy_is_flat_until_its_indicators_are_defined(
    name: str, settings: Any, closes: list[float], undefined_bars: int
) -> None:
    positions = STRATEGIES[name].positions(bars_of(closes), settings, False)
    assert positions[:undefined_bars].tolist() == [0] * undefined_bars
    assert positions[undefined_bars:].tolist() == [1] * (len(closes) - undefined_bars)


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("sma_crossover", SmaCrossoverParams(fast=2, slow=5)),
        ("rsi_mean_reversion", RsiMeanReversionParams(period=5)),
        ("bollinger_breakout", BollingerBreakoutParams(period=5)),
    ],
)
def test_a_series_shorter_than_the_warm_up_gives_no_position(name: str, settings: Any) -> None:
    positions = STRATEGIES[name].positions(bars_of([3, 2, 1]), settings, True)
    assert positions.tolist() == [0, 0, 0]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_without_allow_short_every_short_position_becomes_flat(name: str) -> None:
    rng = np.random.default_rng(11)
    bars = bars_of(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 2_000))))
    strategy = STRATEGIES[name]
    settings = strategy.params()
    with_shorts = strategy.positions(bars, settings, True)
    long_only = strategy.positions(bars, settings, False)
    assert (with_shorts == -1).any()  # the series does call for shorts
    assert set(long_only.tolist()) <= {0, 1}
    assert long_only.tolist() == np.maximum(with_shorts, 0).tolist()
