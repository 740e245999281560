"""The `backtesting` operation: the dataset named by the params, sliced to start/end, run
through the engine with progress and cancel wired to the operation's context."""

from typing import Any

from workfleet.operations.backtest.params import BacktestParams
from workfleet.operations.backtest.run import run_backtest
from workfleet.operations.context import OperationContext
from workfleet.operations.marketdata import slice_bars


def run(params: BacktestParams, ctx: OperationContext) -> dict[str, Any]:
    bars = slice_bars(ctx.dataset(params.symbol, params.timeframe), params.start, params.end)
    outcome = run_backtest(bars, params, progress=ctx.report, cancelled=ctx.cancelled)
    return outcome.result
