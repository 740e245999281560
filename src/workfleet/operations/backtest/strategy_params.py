"""Each strategy's parameters, apart from its code: validating a submit needs these alone, so
the backend and the worker's main process never import numpy or pandas."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SmaCrossoverParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    fast: int = Field(10, ge=1, le=10_000, description="bars in the fast moving average")
    slow: int = Field(30, ge=2, le=10_000, description="bars in the slow moving average")

    @model_validator(mode="after")
    def _fast_is_faster(self) -> Self:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be less than slow ({self.slow})")
        return self


class RsiMeanReversionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    period: int = Field(14, ge=2, le=10_000, description="bars in Wilder's RSI")
    lower: float = Field(30.0, ge=0, le=100, description="buy below this RSI")
    upper: float = Field(70.0, ge=0, le=100, description="sell above this RSI")

    @model_validator(mode="after")
    def _lower_below_upper(self) -> Self:
        if self.lower >= self.upper:
            raise ValueError(f"lower ({self.lower}) must be less than upper ({self.upper})")
        return self


class BollingerBreakoutParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    period: int = Field(20, ge=2, le=10_000, description="bars in the moving average")
    num_std: float = Field(2.0, gt=0, le=10, description="band width in standard deviations")


class ModelStrategyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    threshold: float = Field(
        0.5,
        ge=0.5,
        lt=1,
        description="long when the model's probability of an up bar is above this; short (or "
        "flat) when it is below 1 - threshold; in between, flat",
    )


@dataclass(frozen=True)
class StrategySpec:
    params: type[BaseModel]
    rule: str = ""  # a constraint between parameters, for messages listing the valid ones


STRATEGY_PARAMS: Final[Mapping[str, StrategySpec]] = {
    "sma_crossover": StrategySpec(SmaCrossoverParams, "fast < slow"),
    "rsi_mean_reversion": StrategySpec(RsiMeanReversionParams, "lower < upper"),
    "bollinger_breakout": StrategySpec(BollingerBreakoutParams),
    "model": StrategySpec(ModelStrategyParams, "model_operation_id naming a training operation"),
}
