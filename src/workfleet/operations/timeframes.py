"""Bar timeframes and symbol names, in one place (free of heavy imports, so the backend can
check them)."""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, get_args

Timeframe = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
TIMEFRAMES: Final[Mapping[str, int]] = MappingProxyType(
    {"1m": 60, "5m": 300, "15m": 900, "1h": 3_600, "4h": 14_400, "1d": 86_400}
)  # seconds per bar
assert tuple(TIMEFRAMES) == get_args(Timeframe)

# A symbol names a dataset in URLs and files: no separators, no dot-dot, no spaces.
SYMBOL_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
