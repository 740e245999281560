"""Strategies: pure functions from bars to target positions p_t in {-1, 0, 1}.

p_t uses bars 0..t only (decided at the close of bar t), is 0 while the strategy's indicators
are undefined, and is never -1 unless `allow_short` (a short signal then means flat).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas ships no annotations; arrays leave here typed
from numpy.typing import NDArray
from pydantic import BaseModel

from workfleet.operations.backtest.bars import Bars
from workfleet.operations.backtest.strategy_params import (
    STRATEGY_PARAMS,
    BollingerBreakoutParams,
    RsiMeanReversionParams,
    SmaCrossoverParams,
)

Positions = NDArray[np.int8]
Signal = NDArray[np.bool_]


def sma_crossover(bars: Bars, params: SmaCrossoverParams, allow_short: bool) -> Positions:
    """Long while SMA_fast(close) > SMA_slow(close), short (or flat) while below, flat on a tie;
    defined from bar slow-1 on."""
    positions = np.zeros(len(bars), dtype=np.int8)
    if len(bars) < params.slow:
        return positions
    running = np.cumsum(bars.close)
    slow = _moving_average(running, params.slow)
    fast = _moving_average(running, params.fast)[params.slow - params.fast :]
    positions[params.slow - 1 :] = long_or_short(fast > slow, fast < slow, allow_short)
    return positions


def rsi_mean_reversion(bars: Bars, params: RsiMeanReversionParams, allow_short: bool) -> Positions:
    """Long when RSI < lower, short (or flat) when RSI > upper, and between the two the previous
    position is held, so a long bought when oversold is kept until RSI is overbought;
    defined from bar `period` on (it needs `period` price changes)."""
    positions = np.zeros(len(bars), dtype=np.int8)
    if len(bars) <= params.period:
        return positions
    rsi = wilder_rsi(bars.close, params.period)
    positions[params.period :] = _hold_between(rsi < params.lower, rsi > params.upper, allow_short)
    return positions


def bollinger_breakout(bars: Bars, params: BollingerBreakoutParams, allow_short: bool) -> Positions:
    """Long when the close is above the upper band, short (or flat) when below the lower band,
    and inside the bands the previous position is held; bands are the `period`-bar mean of the
    close ± num_std population standard deviations, defined from bar period-1 on."""
    positions = np.zeros(len(bars), dtype=np.int8)
    if len(bars) < params.period:
        return positions
    window = pd.Series(bars.close).rolling(params.period)
    mean = np.asarray(window.mean().to_numpy(), dtype=np.float64)[params.period - 1 :]
    std = np.asarray(window.std(ddof=0).to_numpy(), dtype=np.float64)[params.period - 1 :]
    close = bars.close[params.period - 1 :]
    above = close > mean + params.num_std * std
    below = close < mean - params.num_std * std
    positions[params.period - 1 :] = _hold_between(above, below, allow_short)
    return positions


def wilder_rsi(close: NDArray[np.float64], period: int) -> NDArray[np.float64]:
    """Wilder's RSI for bars period..n-1: gains and losses averaged with a seed of their first
    `period` values, then avg = avg + (x - avg) / period; 50 when the price has not moved."""
    change = np.diff(close)
    gain = _wilder_average(np.maximum(change, 0.0), period)
    loss = _wilder_average(np.maximum(-change, 0.0), period)
    # 100 - 100 / (1 + gain / loss), written so that no losses gives 100 without dividing by 0
    moved = gain + loss
    return np.divide(100.0 * gain, moved, out=np.full_like(moved, 50.0), where=moved > 0)


def _wilder_average(values: NDArray[np.float64], period: int) -> NDArray[np.float64]:
    seeded = values[period - 1 :].copy()
    seeded[0] = values[:period].mean()
    # pandas' adjust=False EWM is exactly Wilder's recursion, run in compiled code
    smoothed = pd.Series(seeded).ewm(alpha=1.0 / period, adjust=False).mean()
    return np.asarray(smoothed.to_numpy(), dtype=np.float64)


def _moving_average(running: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """Mean of each full window, for bars window-1..n-1, from the running sum of the values."""
    # differences of one running sum: O(n) whatever the window, and causal
    sums = running[window - 1 :].copy()
    sums[1:] -= running[:-window]
    return sums / window


def long_or_short(long: Signal, short: Signal, allow_short: bool) -> Positions:
    """1 where long, -1 where short (0 unless shorts are allowed), else 0."""
    positions = long.astype(np.int8)
    if allow_short:
        positions -= short.astype(np.int8)
    return positions


def _hold_between(long: Signal, short: Signal, allow_short: bool) -> Positions:
    """Each bar with neither signal keeps the position of the last bar that had one (0 before)."""
    decided = long | short
    wanted = long_or_short(long, short, allow_short)
    last_decided = np.where(decided, np.arange(len(decided)), -1)
    np.maximum.accumulate(last_decided, out=last_decided)
    held: Positions = np.where(last_decided >= 0, wanted[last_decided], 0).astype(np.int8)
    return held


P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class Strategy(Generic[P]):
    params: type[P]
    positions: Callable[[Bars, P, bool], Positions]
    rule: str = ""  # a constraint between parameters, for messages listing the valid ones


_POSITIONS: Final[Mapping[str, Callable[[Bars, Any, bool], Positions]]] = {
    "sma_crossover": sma_crossover,
    "rsi_mean_reversion": rsi_mean_reversion,
    "bollinger_breakout": bollinger_breakout,
}
# rule-based strategies; `model` needs a trained model besides the bars (see run_backtest)
STRATEGIES: Final[Mapping[str, Strategy[Any]]] = {
    name: Strategy(STRATEGY_PARAMS[name].params, positions, STRATEGY_PARAMS[name].rule)
    for name, positions in _POSITIONS.items()
}
