"""The part of an operation's parameters that picks its bars: which dataset, and which dates.
Shared by backtests and training, free of heavy imports so the backend can validate submits."""

from datetime import UTC, datetime
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workfleet.operations.timeframes import SYMBOL_PATTERN, Timeframe


class MarketSliceParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    symbol: str = Field(pattern=SYMBOL_PATTERN)
    timeframe: Timeframe
    start: datetime | None = Field(None, description="first bar (UTC); naive means UTC")
    end: datetime | None = Field(
        None, description="end of the bars, excluded (UTC); naive means UTC"
    )

    @field_validator("start", "end")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        return self
