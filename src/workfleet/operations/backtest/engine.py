"""Target positions filled by the exact rule of DESIGN §3.1, and the account bar by bar.

Cash and units only change at fills, so the engine loops over the fills alone (each one's
equity depends on the path before it) and computes everything per bar with whole-array numpy.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from workfleet.operations.backtest.strategies import Positions

Checkpoint = Callable[[int, float], None]  # (bars simulated so far, P&L at the last of them)
CHECKPOINTS = 4  # progress reports per run: a whole run takes milliseconds, not minutes


@dataclass(frozen=True)
class Execution:
    """The account and its costs: the half of the parameters that decides how orders fill."""

    initial_capital: float
    commission: float = 0.0
    slippage: float = 0.0
    position_fraction: float = 1.0


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare to one bool
class Fills:
    """One row per change of position, at the open of `bar`."""

    bar: NDArray[np.intp]
    position: Positions  # p after the fill
    units: NDArray[np.float64]  # held after the fill (fractional, negative when short)
    price: NDArray[np.float64]  # the open, moved by slippage against the trade
    cash_flow: NDArray[np.float64]  # into cash, commission included


@dataclass(frozen=True, eq=False)
class Simulation:
    held: Positions  # position over each bar, set at its open: p_{t-1}
    units: NDArray[np.float64]  # per bar, after its open
    cash: NDArray[np.float64]
    equity: NDArray[np.float64]  # cash + units * close
    fills: Fills


def simulate(
    open_: NDArray[np.float64],
    close: NDArray[np.float64],
    positions: Positions,
    execution: Execution,
    *,
    checkpoint: Checkpoint | None = None,
) -> Simulation:
    """Hold p_t from the open of bar t+1, filling each change of position as DESIGN §3.1 says."""
    bars = len(close)
    held = np.zeros(bars, dtype=np.int8)
    held[1:] = positions[:-1]
    fill_bars = np.flatnonzero(held[1:] != held[:-1]) + 1
    units_after, cash_flow = _fill_in_stages(
        fill_bars, held[fill_bars].tolist(), open_[fill_bars].tolist(), close, execution, checkpoint
    )
    # a running sum from the initial capital adds in the loop's order: the loop's cash, exactly
    cash_after = np.cumsum(np.concatenate(([execution.initial_capital], cash_flow)))[1:]
    # between fills nothing is traded: each fill's units and cash last until the next one
    stretch = np.diff(fill_bars, prepend=0, append=bars)
    units = np.repeat(np.concatenate(([0.0], units_after)), stretch)
    cash = np.repeat(np.concatenate(([execution.initial_capital], cash_after)), stretch)
    traded = np.diff(units_after, prepend=0.0)
    fills = Fills(
        bar=fill_bars,
        position=held[fill_bars],
        units=units_after,
        price=open_[fill_bars] * (1.0 + execution.slippage * np.sign(traded)),
        cash_flow=cash_flow,
    )
    return Simulation(held=held, units=units, cash=cash, equity=cash + units * close, fills=fills)


def _fill_in_stages(
    fill_bars: NDArray[np.intp],
    targets: list[int],
    opens: list[float],
    close: NDArray[np.float64],
    execution: Execution,
    checkpoint: Checkpoint | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Units after each fill and its cash flow, reporting P&L a few times along the way."""
    units_after: list[float] = []
    cash_flow: list[float] = []
    cash, units = execution.initial_capital, 0.0
    done = 0
    for stage_end in _stage_ends(len(close)):
        upto = int(np.searchsorted(fill_bars, stage_end))  # fills at bars before stage_end
        cash, units = _fill(
            targets[done:upto], opens[done:upto], cash, units, execution, units_after, cash_flow
        )
        done = upto
        if checkpoint is not None:
            pnl = cash + units * float(close[stage_end - 1]) - execution.initial_capital
            checkpoint(stage_end, pnl)
    return np.array(units_after, dtype=np.float64), np.array(cash_flow, dtype=np.float64)


def _fill(
    targets: list[int],
    opens: list[float],
    cash: float,
    units: float,
    execution: Execution,
    units_after: list[float],
    cash_flow: list[float],
) -> tuple[float, float]:
    """The fill rule, one fill at a time (on plain floats: numpy scalars would be slower)."""
    fraction = execution.position_fraction
    slippage = execution.slippage
    commission = execution.commission
    for target, open_price in zip(targets, opens, strict=True):
        equity = cash + units * open_price
        target_units = target * fraction * equity / open_price
        trade = target_units - units
        fill_price = open_price * (1.0 + slippage * ((trade > 0) - (trade < 0)))
        notional = trade * fill_price
        flow = -(notional + commission * abs(notional))
        cash += flow
        units = target_units
        units_after.append(units)
        cash_flow.append(flow)
    return cash, units


def _stage_ends(bars: int) -> list[int]:
    return sorted({max(1, bars * stage // CHECKPOINTS) for stage in range(1, CHECKPOINTS + 1)})
