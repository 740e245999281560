"""The `training` operation: the dataset named by the params, sliced to start/end, trained on
with progress, cancel and checkpoints wired to the operation's context; the model is kept as
the artifact `model.npz`."""

import hashlib
from typing import Any

from workfleet.operations.backtest.bars import bars_from_frame
from workfleet.operations.context import OperationContext
from workfleet.operations.marketdata import slice_bars
from workfleet.operations.training.model_file import MODEL_ARTIFACT
from workfleet.operations.training.params import TrainingParams
from workfleet.operations.training.train import Checkpoints, train


def run(params: TrainingParams, ctx: OperationContext) -> dict[str, Any]:
    bars = slice_bars(ctx.dataset(params.symbol, params.timeframe), params.start, params.end)
    outcome = train(
        params,
        bars_from_frame(bars),
        progress=ctx.report,
        cancelled=ctx.cancelled,
        checkpoints=Checkpoints(ctx.save_checkpoint, ctx.load_checkpoint),
    )
    model = outcome.model.to_bytes()
    ctx.write_artifact(MODEL_ARTIFACT, model)
    return outcome.result | {
        "model_artifact": MODEL_ARTIFACT,
        "model_sha256": hashlib.sha256(model).hexdigest(),
    }
