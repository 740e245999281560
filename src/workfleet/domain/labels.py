"""Labels: what a worker advertises (`zone=eu-west`, `disk=nvme`), and the selector an
operation's requirements carry (the worker must have every one of its labels, same value).

Held as a tuple of (key, value) pairs sorted by key, so the records that carry them stay
hashable (operations are queued in buckets keyed by their requirements).
"""

import re
from collections.abc import Iterable, Mapping
from typing import Final

Labels = tuple[tuple[str, str], ...]

LABEL_KEY_PATTERN: Final = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62})$"
LABEL_VALUE_PATTERN: Final = r"^[A-Za-z0-9._/-]{0,63}$"
MAX_LABELS: Final = 32
_KEY = re.compile(LABEL_KEY_PATTERN)
_VALUE = re.compile(LABEL_VALUE_PATTERN)


def as_labels(given: Mapping[str, str] | Iterable[Iterable[str]]) -> Labels:
    """Sorted pairs from a mapping or from pairs (as JSON gives them back: lists of two)."""
    items = given.items() if isinstance(given, Mapping) else given
    pairs = {}
    for item in items:
        key, value = item
        pairs[str(key)] = str(value)
    return tuple(sorted(pairs.items()))


def selects(selector: Labels, labels: Labels) -> bool:
    """Every label of the selector is among the labels (an empty selector selects all)."""
    return all(pair in labels for pair in selector)


def format_labels(labels: Labels) -> str:
    return ",".join(f"{key}={value}" for key, value in labels)


def parse_labels(text: str | Iterable[str]) -> dict[str, str]:
    """`k=v,k=v` (or several such strings) as a dict; ValueError naming a malformed item."""
    parts = [text] if isinstance(text, str) else list(text)
    found: dict[str, str] = {}
    for part in parts:
        for item in part.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not _KEY.match(key) or not _VALUE.match(value):
                raise ValueError(
                    f"bad label {item!r}: expected key=value, the key a letter or digit then up "
                    "to 62 of letters, digits and ._/-, the value up to 63 of them"
                )
            if found.get(key, value) != value:
                raise ValueError(f"label {key!r} given twice with different values")
            found[key] = value
    if len(found) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, not {len(found)}")
    return found
