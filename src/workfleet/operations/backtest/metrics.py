"""The result of a backtest. Returns are fractions (0.05 is 5%); None where a figure is undefined.

- total_return: final equity / initial capital - 1.
- annualized_return: (final equity / initial capital) ** (1 / years) - 1, where years is the time
  from the first to the last timestamp in years of 365.25 days; -1.0 once equity is gone (<= 0);
  None when the bars span no time.
- sharpe: mean / sample standard deviation of the bar returns * sqrt(periods per year), with a
  risk-free rate of 0 and periods per year = bars / years; None without variation.
- sortino: mean bar return / downside deviation * sqrt(periods per year), the downside deviation
  being sqrt(mean(min(r, 0) ** 2)) over all bars; None when no bar lost.
- calmar: annualized_return / max_drawdown; None without a drawdown.
- max_drawdown: the largest fall of equity from its running peak, as a positive fraction of that
  peak (0 when equity never fell).
- win_rate: share of trades with a positive P&L; None without trades.
- profit_factor: gross profit / gross loss over trades; None when no trade lost.
- num_trades: positions opened (a flip opens one; one still open at the end counts).
- avg_trade_return: mean over trades of P&L / |entry notional|; None without trades.
- exposure: share of bars over which a position was held.
- bars: bars simulated.

The bar return r_t = equity_t / equity_{t-1} - 1, for t >= 1, and 0 after equity has fallen to
0 or below (a ruined account has nothing left to earn a return on).
"""

import math

import numpy as np
from numpy.typing import NDArray

from workfleet.operations.backtest.engine import Simulation
from workfleet.operations.backtest.trades import RoundTrips

SECONDS_PER_YEAR = 365.25 * 86_400


def performance(
    simulation: Simulation,
    trips: RoundTrips,
    timestamps: NDArray[np.datetime64],
    initial_capital: float,
) -> dict[str, float | int | None]:
    equity = simulation.equity
    growth = float(equity[-1]) / initial_capital
    years = _years_spanned(timestamps)
    periods_per_year = len(equity) / years if years > 0 else None
    returns = _bar_returns(equity)
    annualized_return = _annualized_return(growth, years)
    max_drawdown = _max_drawdown(equity)
    return {
        "total_return": _finite(growth - 1.0),
        "annualized_return": annualized_return,
        "sharpe": _sharpe(returns, periods_per_year),
        "sortino": _sortino(returns, periods_per_year),
        "calmar": _ratio(annualized_return, max_drawdown),
        "max_drawdown": _finite(max_drawdown),
        "win_rate": _ratio(float(np.count_nonzero(trips.pnl > 0)), float(len(trips))),
        "profit_factor": _profit_factor(trips.pnl),
        "num_trades": len(trips),
        "avg_trade_return": _finite(float(trips.returns.mean())) if len(trips) else None,
        "exposure": np.count_nonzero(simulation.held) / len(equity),
        "bars": len(equity),
    }


def _years_spanned(timestamps: NDArray[np.datetime64]) -> float:
    span = (timestamps[-1] - timestamps[0]) / np.timedelta64(1, "s")
    return float(span) / SECONDS_PER_YEAR


def _bar_returns(equity: NDArray[np.float64]) -> NDArray[np.float64]:
    before = equity[:-1]
    if before.min(initial=1.0) > 0:  # the usual case, and a masked divide costs three times more
        returns = equity[1:] / before
        returns -= 1.0
        return returns
    ruined = before <= 0
    return np.divide(equity[1:] - before, before, out=np.zeros_like(before), where=~ruined)


def _annualized_return(growth: float, years: float) -> float | None:
    if years <= 0:
        return None
    if growth <= 0:
        return -1.0
    try:
        return _finite(growth ** (1.0 / years) - 1.0)
    except OverflowError:  # a short span compounds a gain past what a float holds
        return None


def _sharpe(returns: NDArray[np.float64], periods_per_year: float | None) -> float | None:
    if periods_per_year is None or len(returns) < 2:
        return None
    mean = float(returns.mean())
    deviations = returns - mean
    # the sample standard deviation, with a dot product: half the passes of ndarray.std
    volatility = math.sqrt(float(deviations @ deviations) / (len(returns) - 1))
    return _ratio(mean * math.sqrt(periods_per_year), volatility)


def _sortino(returns: NDArray[np.float64], periods_per_year: float | None) -> float | None:
    if periods_per_year is None or len(returns) == 0:
        return None
    losses = np.minimum(returns, 0.0)
    downside = math.sqrt(float(losses @ losses) / len(returns))
    return _ratio(float(returns.mean()) * math.sqrt(periods_per_year), downside)


def _max_drawdown(equity: NDArray[np.float64]) -> float:
    peak = np.maximum.accumulate(equity)  # the first bar is the initial capital: peaks are > 0
    return 1.0 - float((equity / peak).min())


def _profit_factor(pnl: NDArray[np.float64]) -> float | None:
    gross_loss = -float(pnl[pnl < 0].sum())
    return _ratio(float(pnl[pnl > 0].sum()), gross_loss)


def _ratio(numerator: float | None, denominator: float) -> float | None:
    if numerator is None or denominator == 0:
        return None
    return _finite(numerator / denominator)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
