"""Deterministic synthetic bars: a regime-switching geometric random walk with a pattern planted
in its returns, so models have something to learn and tests something to measure."""

from datetime import UTC, datetime
from math import isfinite, sqrt
from typing import Final

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas ships no annotations; arrays leave here typed
from numpy.typing import NDArray

from workfleet.operations.marketdata.frames import (
    MAX_NS,
    MIN_NS,
    NS_PER_S,
    DataError,
    Floats,
    Nanos,
    shown,
    to_nanos,
    utc_index,
)
from workfleet.operations.timeframes import TIMEFRAMES

# (annual drift, annual volatility) per regime: a calm uptrend, a choppy range, a volatile slide.
_REGIMES: Final = np.array([[0.30, 0.15], [0.05, 0.25], [-0.30, 0.50]])
# Regimes last this many bars on average whatever the timeframe, so any series shows several.
_MEAN_REGIME_BARS: Final = 250
# These markets trade around the clock (crypto-like): a year is 365 days of bars.
_SECONDS_PER_YEAR: Final = 365 * 86_400
# A floor no bar reaches (over 15 standard deviations even on 1d bars in the wildest regime): it
# makes positive prices a guarantee instead of a likelihood.
_WORST_RETURN: Final = -0.5
_BASE_VOLUME: Final = 1_000.0


def generate(
    *,
    bars: int,
    timeframe: str,
    seed: int,
    start: datetime = datetime(2020, 1, 1, tzinfo=UTC),
    start_price: float = 100.0,
    autocorrelation: float = 0.0,
) -> pd.DataFrame:
    """`bars` synthetic bars every `timeframe` from `start` (naive = UTC).

    A geometric random walk whose (drift, volatility) is one of `_REGIMES`, switching as a Markov
    chain that leaves its regime with probability 1/_MEAN_REGIME_BARS per bar, and whose returns
    have lag-1 autocorrelation `autocorrelation`: a pattern for models to find. Each open is the
    previous close; wicks and volume grow with the regime's volatility and the size of the move.

    Same arguments, same frame on any machine: every draw comes from `default_rng(seed)` and the
    rest is arithmetic numpy does exactly (no exp or log, whose SIMD versions differ by CPU).
    Bar t depends on draws up to t only, so a longer series extends a shorter one.
    """
    step = _timeframe_seconds(timeframe)
    _check_arguments(bars, seed, start_price, autocorrelation)
    index = utc_index(_regular_nanos(start, step, bars))
    regime_rng, shock_rng, bar_rng = np.random.default_rng(seed).spawn(3)
    regime = _regimes(regime_rng.random((bars, 2)))
    years = step / _SECONDS_PER_YEAR
    volatility = _REGIMES[regime, 1] * sqrt(years)
    standardised = _autocorrelated(shock_rng.standard_normal(bars), autocorrelation)
    returns = np.maximum(_REGIMES[regime, 0] * years + standardised * volatility, _WORST_RETURN)
    close = start_price * np.cumprod(1.0 + returns)
    open_ = np.concatenate(([start_price], close[:-1]))
    draws = np.abs(bar_rng.standard_normal((bars, 3)))
    wicks = np.minimum(draws[:, :2] * volatility[:, None] / 2, 0.5)  # < 1: lows stay positive
    columns = {
        "open": open_,
        "high": np.maximum(open_, close) * (1.0 + wicks[:, 0]),
        "low": np.minimum(open_, close) * (1.0 - wicks[:, 1]),
        "close": close,
        "volume": _BASE_VOLUME * (1.0 + np.abs(standardised)) * (0.5 + draws[:, 2]),
    }
    return pd.DataFrame(columns, index=index)


def _timeframe_seconds(timeframe: str) -> int:
    if timeframe not in TIMEFRAMES:
        raise DataError(f"unknown timeframe {timeframe!r}: use one of {', '.join(TIMEFRAMES)}")
    return TIMEFRAMES[timeframe]


def _check_arguments(bars: int, seed: int, start_price: float, autocorrelation: float) -> None:
    if bars < 1:
        raise DataError(f"bars must be at least 1, got {bars}")
    if seed < 0:  # numpy's seeds are non-negative
        raise DataError(f"seed must be 0 or more, got {seed}")
    if not (isfinite(start_price) and start_price > 0):
        raise DataError(f"start_price must be a positive number, got {start_price}")
    if not -1.0 < autocorrelation < 1.0:  # NaN fails too
        raise DataError(
            f"autocorrelation must lie strictly between -1 and 1, got {autocorrelation}"
        )


def _regular_nanos(start: datetime, step: int, bars: int) -> Nanos:
    first = to_nanos(start)
    last = first + (bars - 1) * step * NS_PER_S
    if first < MIN_NS or last > MAX_NS:
        raise DataError(f"{bars} bars of {step} s from {shown(start)} do not fit in 1677..2262")
    return first + np.arange(bars, dtype=np.int64) * (step * NS_PER_S)


def _regimes(draws: Floats) -> NDArray[np.intp]:
    """Each bar's regime from two uniform draws per bar: leave the regime?, and for which one."""
    count = len(_REGIMES)
    leave = draws[:, 0] < 1.0 / _MEAN_REGIME_BARS
    hop = 1 + (draws[:, 1] * (count - 1)).astype(np.intp)  # 1..count-1: a switch always moves
    regimes: NDArray[np.intp] = np.cumsum(leave * hop) % count
    return regimes


def _autocorrelated(noise: Floats, phi: float) -> Floats:
    """The AR(1) series a_t = phi·a_(t-1) + sqrt(1 - phi²)·noise_t with a_0 = noise_0: unit
    variance from the first bar on, lag-1 autocorrelation phi.

    Computed from its sum form a_t = Σ_k phi^k·w_(t-k) as a prefix scan: after the pass with shift
    s every bar holds its 2s latest terms, so log2(bars) whole-array passes replace a Python loop.
    """
    series = noise * sqrt(1.0 - phi * phi)
    series[0] = noise[0]
    shift, factor = 1, phi
    while shift < len(series) and factor != 0.0:  # phi^shift underflows to 0 long before the end
        series[shift:] += factor * series[:-shift]  # the product is a new array: no aliasing
        shift, factor = 2 * shift, factor * factor
    return series
