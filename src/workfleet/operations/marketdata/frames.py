"""What all market data shares: the frame's columns, its error, its times; and `slice_bars`."""

from datetime import UTC, datetime
from typing import Final, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas ships no annotations; arrays leave here typed
from numpy.typing import NDArray

COLUMNS: Final = ("timestamp", "open", "high", "low", "close", "volume")
VALUES: Final = COLUMNS[1:]
PRICES: Final = COLUMNS[1:5]
NS_PER_S: Final = 1_000_000_000
# The span a nanosecond int64 can hold (1677-09-21 to 2262-04-11): pandas' own bounds.
MIN_NS: Final[int] = pd.Timestamp.min.value
MAX_NS: Final[int] = pd.Timestamp.max.value

Floats = NDArray[np.float64]
Nanos = NDArray[np.int64]  # nanoseconds since the Unix epoch, UTC
Mask = NDArray[np.bool_]


class DataError(ValueError):
    """Market data that cannot be used, saying what to fix; for a CSV file, where: the 1-based
    line (the header is line 1) and the column."""


def slice_bars(frame: pd.DataFrame, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    """The bars with start <= timestamp < end; None leaves that side open, naive means UTC.

    Half-open so that back-to-back periods ([a, b) then [b, c)) share no bar and `end` can be the
    first moment not wanted, such as a date at midnight. DataError when no bar is left, naming the
    range the data covers. `frame` is indexed by time, as this package returns bars.
    """
    nanos = np.asarray(pd.DatetimeIndex(frame.index).as_unit("ns").asi8, dtype=np.int64)
    first = 0 if start is None else int(np.searchsorted(nanos, _clamped_nanos(start)))
    stop = len(nanos) if end is None else int(np.searchsorted(nanos, _clamped_nanos(end)))
    if first >= stop:
        since = "the start" if start is None else shown(start)
        until = "the end" if end is None else shown(end)
        have = (
            f"the data covers {iso(nanos[0])} to {iso(nanos[-1])} ({len(nanos)} bars)"
            if len(nanos)
            else "the data has no bars"
        )
        raise DataError(f"no bars from {since} to {until} (end excluded): {have}")
    return frame.iloc[first:stop]


def utc_index(nanos: Nanos) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(nanos.view("datetime64[ns]"), name="timestamp").tz_localize(UTC)


def to_nanos(moment: datetime) -> int:
    """Exact nanoseconds since the epoch (naive = UTC), as a Python int: any datetime fits."""
    delta = _utc(moment) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1_000


def iso_strings(nanos: Nanos) -> list[str]:
    """ISO 8601 without the zone, in the coarsest unit that writes every time exactly (whole
    seconds for ordinary bars: short, readable files)."""
    units: tuple[tuple[Literal["s", "ms", "us", "ns"], int], ...] = (
        ("s", NS_PER_S),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    )
    unit = next(name for name, size in units if not (nanos % size).any())
    stamps: NDArray[np.datetime64] = nanos.view("datetime64[ns]")
    strings: list[str] = np.datetime_as_string(stamps, unit=unit).tolist()
    return strings


def iso(nanos: int | np.int64) -> str:
    return iso_strings(np.array([nanos], dtype=np.int64))[0] + "Z"


def shown(moment: datetime) -> str:
    return _utc(moment).isoformat().replace("+00:00", "Z")


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _clamped_nanos(moment: datetime) -> int:
    return min(max(to_nanos(moment), MIN_NS), MAX_NS)  # years 1..9999 overflow int64 nanoseconds
