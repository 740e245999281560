"""The backtest's `model` strategy: a trained model's probability of an up bar as positions."""

import numpy as np

from workfleet.operations.backtest.bars import Bars
from workfleet.operations.backtest.strategies import Positions, long_or_short
from workfleet.operations.backtest.strategy_params import ModelStrategyParams
from workfleet.operations.training.features import feature_matrix
from workfleet.operations.training.model_file import TrainedModel


def model_positions(
    bars: Bars, model: TrainedModel, params: ModelStrategyParams, allow_short: bool
) -> Positions:
    """Long while P(up) > threshold, short (or flat) while P(up) < 1 - threshold, else flat;
    row t of the features uses bars 0..t only, and is undefined (flat) before the warm-up."""
    probability = model.probability_up(feature_matrix(bars))
    with np.errstate(invalid="ignore"):  # NaN rows compare False: flat
        long = probability > params.threshold
        short = probability < 1.0 - params.threshold
    return long_or_short(long, short, allow_short)
