"""Round trips: each position from the fill that opened it to the fill that closed or flipped it,
or, still open at the end, to the last close (marked there without costs, like the equity)."""

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from workfleet.operations.backtest.engine import Fills


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare to one bool
class RoundTrips:
    entry_bar: NDArray[np.intp]
    exit_bar: NDArray[np.intp]  # the last bar when still open at the end
    units: NDArray[np.float64]  # negative when short
    entry_price: NDArray[np.float64]
    exit_price: NDArray[np.float64]
    pnl: NDArray[np.float64]  # both fills' slippage and commission included
    returns: NDArray[np.float64]  # pnl / |entry notional|
    open_at_end: NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.pnl)


def round_trips(fills: Fills, close: NDArray[np.float64], commission: float) -> RoundTrips:
    """The trades the fills made; their P&L adds up to the change in equity."""
    entry_notional = fills.units * fills.price
    opening_flow = -(entry_notional + commission * np.abs(entry_notional))
    # a flip's single fill closes one position and opens the next; whatever of its cash flow
    # did not open the new position closed the old one (0 for a fill from flat)
    closing_flow = fills.cash_flow - opening_flow
    opened = np.flatnonzero(fills.position != 0)
    still_open = opened + 1 == len(fills.bar)
    # the next fill closes each position; a position still open reads the last fill's row,
    # and np.where below puts the last close in its place
    exit_fill = np.minimum(opened + 1, len(fills.bar) - 1)
    units = fills.units[opened]
    last_close = float(close[-1])
    exit_flow = np.where(still_open, units * last_close, closing_flow[exit_fill])
    pnl = opening_flow[opened] + exit_flow
    committed = np.abs(entry_notional[opened])
    returns = np.divide(pnl, committed, out=np.zeros_like(pnl), where=committed > 0)
    return RoundTrips(
        entry_bar=fills.bar[opened],
        exit_bar=np.where(still_open, len(close) - 1, fills.bar[exit_fill]),
        units=units,
        entry_price=fills.price[opened],
        exit_price=np.where(still_open, last_close, fills.price[exit_fill]),
        pnl=pnl,
        returns=returns,
        open_at_end=still_open,
    )


def trade_records(trips: RoundTrips, timestamps: NDArray[np.datetime64]) -> list[dict[str, Any]]:
    """The trades as JSON-ready rows, with ISO 8601 UTC times."""
    entry_times = np.datetime_as_string(timestamps[trips.entry_bar], unit="s", timezone="UTC")
    exit_times = np.datetime_as_string(timestamps[trips.exit_bar], unit="s", timezone="UTC")
    sides = np.where(trips.units < 0, "short", "long")
    return [
        {
            "side": side,
            "entry_time": entry_time,
            "exit_time": exit_time,
            "entry_bar": entry_bar,
            "exit_bar": exit_bar,
            "units": units,
            "entry_price": entry_price,
            "exit_price": exit_price,
            "pnl": pnl,
            "return": trade_return,
            "open_at_end": open_at_end,
        }
        # tolist() gives plain Python values: JSON-ready, and quick to read row by row
        for (
            side,
            entry_time,
            exit_time,
            entry_bar,
            exit_bar,
            units,
            entry_price,
            exit_price,
            pnl,
            trade_return,
            open_at_end,
        ) in zip(
            sides.tolist(),
            entry_times.tolist(),
            exit_times.tolist(),
            trips.entry_bar.tolist(),
            trips.exit_bar.tolist(),
            trips.units.tolist(),
            trips.entry_price.tolist(),
            trips.exit_price.tolist(),
            trips.pnl.tolist(),
            trips.returns.tolist(),
            trips.open_at_end.tolist(),
            strict=False,  # columns of one RoundTrips, equal by construction; strict costs 10%
        )
    ]
