"""Market datasets as the backend records them: content-addressed (SHA-256 of the canonical
CSV), one current version per (symbol, timeframe)."""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Dataset:
    symbol: str
    timeframe: str
    sha256: str
    bars: int
    first_at: datetime
    last_at: datetime
    size_bytes: int
    created_at: datetime
