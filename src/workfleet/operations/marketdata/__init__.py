"""Market data: deterministic synthetic bars, the CSV form datasets are imported and stored in,
and cutting bars to a run's start/end.

Every frame here has the shape the backtesting engine reads (`backtest.bars.bars_from_frame`):
a strictly increasing UTC `DatetimeIndex` named `timestamp`, in nanoseconds, and float64 columns
open, high, low, close, volume, in that order.
"""

from workfleet.operations.marketdata.csvfile import parse_csv, to_csv
from workfleet.operations.marketdata.frames import COLUMNS, DataError, slice_bars
from workfleet.operations.marketdata.synthetic import generate
from workfleet.operations.timeframes import TIMEFRAMES

__all__ = ["COLUMNS", "TIMEFRAMES", "DataError", "generate", "parse_csv", "slice_bars", "to_csv"]
