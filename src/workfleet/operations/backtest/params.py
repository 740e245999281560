"""`backtesting` operation parameters (wire names as in DESIGN §3.1)."""

from typing import Any, Self

import annotated_types
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from workfleet.operations.backtest.strategy_params import STRATEGY_PARAMS
from workfleet.operations.market_params import MarketSliceParams
from workfleet.validation import problems


class BacktestParams(MarketSliceParams):
    strategy: str
    strategy_params: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    initial_capital: float = Field(10_000.0, gt=0)
    commission: float = Field(0.0, ge=0, lt=1, description="fraction of each traded notional")
    slippage: float = Field(0.0, ge=0, lt=1, description="fraction of the open paid per fill")
    position_fraction: float = Field(1.0, gt=0, le=1, description="share of equity exposed")
    allow_short: bool = False
    model_operation_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="the training operation (model strategy)",
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        if name not in STRATEGY_PARAMS:
            raise ValueError(
                f"unknown strategy {name!r}; valid strategies: {describe_strategies()}"
            )
        return name

    @field_validator("strategy_params")
    @classmethod
    def _valid_strategy_params(cls, raw: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("strategy")
        if name is None:  # the strategy itself was refused, and says so
            return raw
        try:
            settings: BaseModel = STRATEGY_PARAMS[name].params.model_validate(raw)
        except ValidationError as exc:
            found = problems(exc)
            raise ValueError(
                f"invalid parameters for {name}: {found}; it takes {describe_strategy(name)}"
            ) from None
        return settings.model_dump()  # defaults filled in, so results show what ran

    @model_validator(mode="after")
    def _model_named_for_model_strategy(self) -> Self:
        if self.strategy == "model" and self.model_operation_id is None:
            raise ValueError(
                "the model strategy needs model_operation_id: the training operation whose "
                "model it trades"
            )
        if self.strategy != "model" and self.model_operation_id is not None:
            raise ValueError(
                f"model_operation_id is for the model strategy only, not {self.strategy}"
            )
        return self


def describe_strategies() -> str:
    """Every strategy with its parameters, ranges and defaults, for error messages and help."""
    return "; ".join(describe_strategy(name) for name in STRATEGY_PARAMS)


def describe_strategy(name: str) -> str:
    strategy = STRATEGY_PARAMS[name]
    described = [
        _describe_field(field, info) for field, info in strategy.params.model_fields.items()
    ]
    rule = f", with {strategy.rule}" if strategy.rule else ""
    return f"{name}({', '.join(described)}{rule})"


def _describe_field(name: str, info: FieldInfo) -> str:
    kind = "integer" if info.annotation is int else "number"
    low = high = ""
    for bound in info.metadata:
        if isinstance(bound, annotated_types.Ge):
            low = f"{bound.ge} <= "
        elif isinstance(bound, annotated_types.Gt):
            low = f"{bound.gt} < "
        elif isinstance(bound, annotated_types.Le):
            high = f" <= {bound.le}"
        elif isinstance(bound, annotated_types.Lt):
            high = f" < {bound.lt}"
    return f"{name} ({kind}, {low}{name}{high}, default {info.default})"
