"""The `backtesting` operation: the dataset named by the params, sliced to start/end, run
through the engine with progress and cancel wired to the operation's context (and, for the
`model` strategy, the model of the training operation it names)."""

import json
from typing import Any

import numpy as np

from workfleet.operations.backtest.params import BacktestParams
from workfleet.operations.backtest.run import EquityCurve, run_backtest
from workfleet.operations.context import OperationContext
from workfleet.operations.marketdata import slice_bars
from workfleet.operations.training.model_file import MODEL_ARTIFACT, TrainedModel


def run(params: BacktestParams, ctx: OperationContext) -> dict[str, Any]:
    model = None
    if params.model_operation_id is not None:  # checked against its recorded hash on the way
        model = TrainedModel.from_bytes(ctx.artifact(params.model_operation_id, MODEL_ARTIFACT))
    bars = slice_bars(ctx.dataset(params.symbol, params.timeframe), params.start, params.end)
    outcome = run_backtest(bars, params, progress=ctx.report, cancelled=ctx.cancelled, model=model)
    ctx.write_artifact("equity_curve.csv", _equity_csv(outcome.equity_curve))
    ctx.write_artifact("trades.json", json.dumps(outcome.trades).encode())
    return outcome.result


def _equity_csv(curve: EquityCurve) -> bytes:
    stamps = np.datetime_as_string(curve.timestamps, unit="s")
    lines = [
        f"{stamp}Z,{equity!r}" for stamp, equity in zip(stamps, curve.equity.tolist(), strict=True)
    ]
    return ("timestamp,equity\n" + "\n".join(lines) + "\n").encode()
