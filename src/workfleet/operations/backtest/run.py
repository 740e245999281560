"""`run_backtest`: bars and parameters in, result, equity curve and trade list out."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas ships no annotations; arrays leave here typed
from numpy.typing import NDArray

from workfleet.operations.backtest.bars import bars_from_frame
from workfleet.operations.backtest.engine import Execution, simulate
from workfleet.operations.backtest.metrics import performance
from workfleet.operations.backtest.params import BacktestParams
from workfleet.operations.backtest.strategies import STRATEGIES
from workfleet.operations.backtest.strategy_params import ModelStrategyParams
from workfleet.operations.backtest.trades import round_trips, trade_records
from workfleet.operations.context import Cancelled
from workfleet.operations.training.model_file import TrainedModel
from workfleet.operations.training.signals import model_positions


@dataclass(frozen=True, eq=False)
class EquityCurve:
    timestamps: NDArray[np.datetime64]
    equity: NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class BacktestOutcome:
    result: dict[str, float | int | None]
    equity_curve: EquityCurve
    trades: list[dict[str, Any]]


def run_backtest(
    bars: pd.DataFrame,
    params: BacktestParams,
    *,
    progress: Callable[..., None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    model: TrainedModel | None = None,
) -> BacktestOutcome:
    """Backtest `params.strategy` on bars already cut to start/end; `progress` hears of bars
    simulated and P&L, and `cancelled()` returning True raises Cancelled at the next phase.
    The `model` strategy trades `model`, the trained model its params name."""
    market = bars_from_frame(bars)
    _stop_if(cancelled)
    if params.strategy == "model":
        if model is None:
            raise ValueError("the model strategy needs the trained model")
        settings = ModelStrategyParams.model_validate(params.strategy_params)
        positions = model_positions(market, model, settings, params.allow_short)
    else:
        strategy = STRATEGIES[params.strategy]
        chosen = strategy.params.model_validate(params.strategy_params)
        positions = strategy.positions(market, chosen, params.allow_short)
    _stop_if(cancelled)

    def checkpoint(bars_done: int, pnl: float) -> None:
        if progress is not None:
            progress(
                percentage=100.0 * bars_done / len(market),
                bars_processed=bars_done,
                bars_total=len(market),
                running_pnl=pnl,
            )
        _stop_if(cancelled)

    execution = Execution(
        params.initial_capital, params.commission, params.slippage, params.position_fraction
    )
    simulation = simulate(market.open, market.close, positions, execution, checkpoint=checkpoint)
    trips = round_trips(simulation.fills, market.close, params.commission)
    result = performance(simulation, trips, market.timestamps, params.initial_capital)
    _stop_if(cancelled)
    return BacktestOutcome(
        result=result,
        equity_curve=EquityCurve(market.timestamps, simulation.equity),
        trades=trade_records(trips, market.timestamps),
    )


def _stop_if(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise Cancelled("backtest cancelled")
