"""OHLCV bars as plain numpy arrays: the only form strategies and the engine see."""

from dataclasses import dataclass

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas ships no annotations; arrays leave here typed
from numpy.typing import NDArray

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare to one bool
class Bars:
    timestamps: NDArray[np.datetime64]  # UTC, strictly increasing
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.close)


def bars_from_frame(frame: pd.DataFrame) -> Bars:
    """Bars from a frame indexed by UTC timestamps (or with a `timestamp` column);
    naive timestamps are taken as UTC."""
    missing = [name for name in PRICE_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"bars lack the column(s) {', '.join(missing)}")
    if len(frame) == 0:
        raise ValueError("no bars to backtest")
    times = frame["timestamp"] if "timestamp" in frame.columns else frame.index
    if not pd.api.types.is_datetime64_any_dtype(times):
        raise ValueError("bar timestamps must be datetimes (a UTC DatetimeIndex or column)")
    stamps = pd.DatetimeIndex(times)
    # epoch counts are UTC whatever the index's zone: a view of them converts nothing
    epoch = np.asarray(stamps.asi8, dtype=np.int64)
    timestamps = epoch.view(f"datetime64[{stamps.unit}]")
    if not bool(np.all(timestamps[1:] > timestamps[:-1])):
        raise ValueError("bar timestamps must be strictly increasing")
    bars = Bars(
        timestamps=timestamps,
        open=_column(frame, "open"),
        high=_column(frame, "high"),
        low=_column(frame, "low"),
        close=_column(frame, "close"),
        volume=_column(frame, "volume"),
    )
    # the engine divides by the open and marks at the close: both must be real prices
    if not (bool(np.all(bars.open > 0)) and bool(np.all(bars.close > 0))):
        raise ValueError("bar open and close prices must be positive numbers")
    return bars


def _column(frame: pd.DataFrame, name: str) -> NDArray[np.float64]:
    return np.asarray(frame[name].to_numpy(), dtype=np.float64)
