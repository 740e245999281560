"""Indicator features and next-bar labels, numpy only (the backtest's `model` strategy computes
the same features without torch).

Row t of the feature matrix uses bars 0..t only, so a model fed row t decides at the close of
bar t exactly as a strategy does; the label of row t is whether bar t+1 closes above bar t.
Rows before `WARMUP` (where some indicator is undefined) are not samples.
"""

from typing import Final

import numpy as np
from numpy.typing import NDArray

from workfleet.operations.backtest.bars import Bars
from workfleet.operations.backtest.strategies import wilder_rsi

FEATURE_VERSION: Final = 1
RETURN_LAGS: Final = 5
SMA_WINDOWS: Final = (10, 30)
RSI_PERIOD: Final = 14
VOLATILITY_WINDOW: Final = 10
VOLUME_WINDOW: Final = 20
FEATURE_NAMES: Final = (
    *(f"log_return_lag{lag}" for lag in range(RETURN_LAGS)),
    *(f"close_over_sma{window}" for window in SMA_WINDOWS),
    f"rsi{RSI_PERIOD}",
    f"volatility{VOLATILITY_WINDOW}",
    "range_over_close",
    f"log_volume_over_mean{VOLUME_WINDOW}",
)
# the first row where every feature is defined: the longest window, and the lagged returns
WARMUP: Final = max(*SMA_WINDOWS, RSI_PERIOD, VOLATILITY_WINDOW, VOLUME_WINDOW, RETURN_LAGS) - 1


def feature_matrix(bars: Bars) -> NDArray[np.float64]:
    """One row per bar, one column per FEATURE_NAMES entry; rows before WARMUP hold NaN."""
    n = len(bars)
    columns = np.full((n, len(FEATURE_NAMES)), np.nan)
    log_close = np.log(bars.close)
    returns = np.full(n, np.nan)
    returns[1:] = np.diff(log_close)
    for lag in range(RETURN_LAGS):
        columns[lag:, lag] = returns[: n - lag]
    for offset, window in enumerate(SMA_WINDOWS, start=RETURN_LAGS):
        columns[:, offset] = bars.close / _trailing_mean(bars.close, window) - 1.0
    column = RETURN_LAGS + len(SMA_WINDOWS)
    if n > RSI_PERIOD:
        columns[RSI_PERIOD:, column] = wilder_rsi(bars.close, RSI_PERIOD) / 100.0 - 0.5
    columns[:, column + 1] = _trailing_std(returns, VOLATILITY_WINDOW)
    columns[:, column + 2] = (bars.high - bars.low) / bars.close
    log_volume = np.log1p(np.maximum(bars.volume, 0.0))
    columns[:, column + 3] = log_volume - _trailing_mean(log_volume, VOLUME_WINDOW)
    columns[:WARMUP] = np.nan  # one rule for every column: no sample before the warm-up
    return columns


def next_bar_up(bars: Bars) -> NDArray[np.int64]:
    """Label of bar t: 1 if bar t+1 closes above bar t's close, else 0 (last bar: no label)."""
    return (bars.close[1:] > bars.close[:-1]).astype(np.int64)


def samples(bars: Bars) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """(features, labels) for the bars that have both: WARMUP..n-2, in time order."""
    if len(bars) < WARMUP + 2:
        return np.empty((0, len(FEATURE_NAMES))), np.empty(0, dtype=np.int64)
    return feature_matrix(bars)[WARMUP:-1], next_bar_up(bars)[WARMUP:]


def _trailing_mean(values: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """Mean of values t-window+1..t at t (NaN before a full window)."""
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        running = np.concatenate(([0.0], np.cumsum(values)))
        out[window - 1 :] = (running[window:] - running[:-window]) / window
    return out


def _trailing_std(values: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """Population standard deviation of values t-window+1..t at t (NaN while any is NaN)."""
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        windows = np.lib.stride_tricks.sliding_window_view(values, window)
        out[window - 1 :] = windows.std(axis=1)
    return out
