"""`backtesting` operation parameters (wire names as in DESIGN §3.1)."""

from datetime import UTC, datetime
from typing import Any, Self

import annotated_types
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from workfleet.operations.backtest.strategy_params import STRATEGY_PARAMS
from workfleet.operations.timeframes import SYMBOL_PATTERN, Timeframe


class BacktestParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    symbol: str = Field(pattern=SYMBOL_PATTERN)
    timeframe: Timeframe
    start: datetime | None = Field(None, description="first bar (UTC); naive means UTC")
    end: datetime | None = Field(
        None, description="end of the bars, excluded (UTC); naive means UTC"
    )
    strategy: str
    strategy_params: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    initial_capital: float = Field(10_000.0, gt=0)
    commission: float = Field(0.0, ge=0, lt=1, description="fraction of each traded notional")
    slippage: float = Field(0.0, ge=0, lt=1, description="fraction of the open paid per fill")
    position_fraction: float = Field(1.0, gt=0, le=1, description="share of equity exposed")
    allow_short: bool = False
    model_operation_id: str | None = None

    @field_validator("start", "end")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

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
            problems = "; ".join(_problem(error) for error in exc.errors())
            raise ValueError(
                f"invalid parameters for {name}: {problems}; it takes {describe_strategy(name)}"
            ) from None
        return settings.model_dump()  # defaults filled in, so results show what ran

    @field_validator("model_operation_id")
    @classmethod
    def _no_models_yet(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("backtests of trained models arrive with the training workload")
        return value

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
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


def _problem(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
