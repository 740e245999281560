"""The CSV form of bars: `parse_csv` reads and checks what users import, `to_csv` writes the
canonical bytes datasets are stored (and content-addressed) as.

Every check runs on whole columns at once and the first offending row is found with numpy, so a
file of a million bars is read and checked in about a second.
"""

import codecs
import io
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC
from typing import NamedTuple

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas ships no annotations; arrays leave here typed

from workfleet.operations.marketdata.frames import (
    COLUMNS,
    MAX_NS,
    MIN_NS,
    NS_PER_S,
    PRICES,
    VALUES,
    DataError,
    Floats,
    Mask,
    Nanos,
    iso,
    iso_strings,
    utc_index,
)


class _Problem(NamedTuple):
    rows: Mask  # True where the rule is broken
    column: str
    explain: Callable[[int], str]  # what is wrong with that row's value


def parse_csv(data: bytes) -> pd.DataFrame:
    """Bars from CSV bytes, or DataError naming the first bad line (the header is line 1).

    - Header: timestamp, open, high, low, close, volume, each once, in any order (case and spaces
      around names ignored): other tools export these columns in their own order.
    - Timestamps: UTC ISO 8601 (`Z`, `+00:00` or no zone; another offset is converted to UTC) or
      epoch seconds, whole or decimal (read to the microsecond); the style of the first bar holds
      for the whole file.
    - Values: none missing, prices finite and > 0, volume finite and ≥ 0,
      high ≥ max(open, close), low ≤ min(open, close); timestamps strictly increasing.
    A UTF-8 byte order mark and blank lines at the very end are ignored; other blank lines are not.
    """
    body = _text(data)
    names = _header(body)
    _check_field_counts(body)
    table = pd.read_csv(
        io.BytesIO(body),
        header=0,
        names=names,
        index_col=False,
        keep_default_na=False,  # only an empty field is missing; "NA" or "nan" is bad text
        na_values=[""],
        skipinitialspace=True,
    )
    if table.empty:
        raise DataError("line 2: the file has a header but no bars")
    nanos, timestamp_problem = _timestamp_cells(table["timestamp"])
    parsed = {name: _number_cells(table[name]) for name in VALUES}
    values = {name: numbers for name, (numbers, _) in parsed.items()}
    # One pass over every rule, so the earliest bad line is named whatever is wrong with it: a cell
    # that did not parse breaks no rule of an earlier line (NaN compares false, and a bad time,
    # set to 0, can only clash with its own line or the next).
    cells = [timestamp_problem, *(problem for _, problem in parsed.values())]
    _raise_first([*cells, *_bar_problems(nanos, values)], _line)
    return pd.DataFrame(values, index=utc_index(nanos))


def to_csv(frame: pd.DataFrame) -> bytes:
    """The canonical CSV of bars, so the same bars always give the same bytes (datasets are
    stored under the SHA-256 of these) and `parse_csv` gives the frame back exactly.

    Header `timestamp,open,high,low,close,volume`, one line per bar ending in a line feed;
    timestamps ISO 8601 UTC with `Z`, to the second, or to the finest fraction any bar needs;
    numbers as Python's shortest repr that reads back as the same float. Takes bars as this package
    returns them (a DatetimeIndex or a `timestamp` column; naive = UTC) and writes only the six
    columns; refuses bars `parse_csv` would refuse, so every stored dataset can be read back.
    """
    nanos, values = _frame_arrays(frame)
    finite = [
        _cell_problem(pd.Series(values[name], name=name), ~np.isfinite(values[name]), "finite")
        for name in VALUES
    ]
    _raise_first(
        [*finite, *_bar_problems(nanos, values)], lambda row: f"bar {row} at {iso(nanos[row])}"
    )
    cells = np.empty((len(nanos), len(COLUMNS)), dtype=object)
    cells[:, 0] = iso_strings(nanos)
    cells[:, 1:] = np.column_stack([values[name] for name in VALUES])  # boxed as Python floats
    # one C-level formatting call for all cells: a Python loop over rows takes twice as long
    line = "%sZ" + ",%r" * len(VALUES) + "\n"
    return (",".join(COLUMNS) + "\n" + (line * len(nanos)) % tuple(cells.ravel())).encode()


def _text(data: bytes) -> bytes:
    body = data.removeprefix(codecs.BOM_UTF8).rstrip(b" \t\r\n")
    if not body:
        raise DataError(f"the file is empty: expected the header {','.join(COLUMNS)}, then bars")
    if not body.isascii():  # a tenth of the time of decoding, which only non-ASCII files need
        try:
            body.decode()
        except UnicodeDecodeError as error:
            line = body.count(b"\n", 0, error.start) + 1
            raise DataError(f"line {line}: not UTF-8 text") from None
    return body


def _header(body: bytes) -> list[str]:
    end = body.find(b"\n")
    names = [name.strip().lower() for name in body[: end if end >= 0 else None].decode().split(",")]
    complaints = [
        f"{label} {', '.join(map(repr, found))}"
        for label, found in (
            ("missing", [name for name in COLUMNS if name not in names]),
            ("unexpected", [name for name in names if name not in COLUMNS]),
            ("repeated", sorted({name for name in names if names.count(name) > 1})),
        )
        if found
    ]
    if complaints:
        expected = ",".join(COLUMNS)
        raise DataError(
            f"line 1 (header): {'; '.join(complaints)}; expected {expected} (any order)"
        )
    return names


def _check_field_counts(body: bytes) -> None:
    """Six fields on every line: pandas pads short lines but drops a long first line's extras."""
    raw = np.frombuffer(body, dtype=np.uint8)
    ends = np.append(np.flatnonzero(raw == ord("\n")), len(raw))
    commas = np.searchsorted(np.flatnonzero(raw == ord(",")), ends)
    fields = np.diff(commas, prepend=0) + 1
    wrong = fields != len(COLUMNS)
    if wrong.any():
        row = int(np.argmax(wrong))
        raise DataError(f"line {row + 1}: expected {len(COLUMNS)} fields, found {fields[row]}")


def _timestamp_cells(column: pd.Series) -> tuple[Nanos, _Problem]:
    """Nanoseconds since the epoch, in the style of the first bar, and the cells not in it."""
    present = column.dropna()
    if len(present) and _is_number(str(present.iloc[0])):
        nanos, bad = _epoch_nanos(pd.to_numeric(column, errors="coerce"))
        expected = "a time in epoch seconds (1677..2262), as the first bar's"
    else:
        times = pd.to_datetime(column, format="ISO8601", utc=True, errors="coerce")
        representable = times.between(pd.Timestamp(MIN_NS, tz=UTC), pd.Timestamp(MAX_NS, tz=UTC))
        bad = ~representable.to_numpy(bool)  # NaT (no time at all) is not between
        nanos = np.where(bad, 0, pd.DatetimeIndex(times.mask(bad)).as_unit("ns").asi8)
        expected = "a UTC ISO 8601 time like 2020-01-31T09:30:00Z, as the first bar's"
    return nanos, _cell_problem(column, bad, expected)


def _epoch_nanos(seconds: pd.Series) -> tuple[Nanos, Mask]:
    if seconds.dtype.kind in "iu":  # whole seconds: exact integer arithmetic
        whole = seconds.to_numpy()
        bad = (whole < MIN_NS // NS_PER_S + 1) | (whole > MAX_NS // NS_PER_S)
        return np.where(bad, 0, whole).astype(np.int64) * NS_PER_S, bad
    decimal = seconds.to_numpy(np.float64)
    bad = ~((decimal > MIN_NS / NS_PER_S + 1) & (decimal < MAX_NS / NS_PER_S - 1))  # NaN: bad
    clean = np.where(bad, 0.0, decimal)
    whole = np.floor(clean)
    # A float holds today's epoch seconds to about 0.2 µs, and scaling all of it by 1e9 would
    # round 0.25 s to 249999872 ns: scale whole seconds and the fraction, read to the microsecond.
    micros = np.rint((clean - whole) * 1e6)
    return whole.astype(np.int64) * NS_PER_S + micros.astype(np.int64) * 1_000, bad


def _number_cells(column: pd.Series) -> tuple[Floats, _Problem]:
    numbers = column
    if column.dtype.kind not in "iuf":  # text somewhere (or True/False): find what is no number
        numbers = pd.to_numeric(column.astype(str), errors="coerce")
    floats = numbers.to_numpy(np.float64)
    return floats, _cell_problem(column, ~np.isfinite(floats), "a finite number")


def _cell_problem(column: pd.Series, bad: Mask, expected: str) -> _Problem:
    def explain(row: int) -> str:
        cell = column.iloc[row]
        return "missing value" if pd.isna(cell) else f"'{cell}' is not {expected}"

    return _Problem(bad, str(column.name), explain)


def _bar_problems(nanos: Nanos, values: Mapping[str, Floats]) -> list[_Problem]:
    """The rules within a bar and between neighbouring bars, in the order they are reported."""
    top = np.maximum(values["open"], values["close"])
    bottom = np.minimum(values["open"], values["close"])

    def repeated(row: int) -> str:
        return f"{iso(nanos[row])} repeats the previous bar's timestamp"

    def backwards(row: int) -> str:
        before = iso(nanos[row - 1])
        return f"{iso(nanos[row])} comes before the previous bar's {before}: sort the bars by time"

    def high(row: int) -> str:
        return f"high {_number(values['high'][row])} is below max(open, close) {_number(top[row])}"

    def low(row: int) -> str:
        return f"low {_number(values['low'][row])} is above min(open, close) {_number(bottom[row])}"

    return [
        _Problem(_versus_previous(nanos, np.equal), "timestamp", repeated),
        _Problem(_versus_previous(nanos, np.less), "timestamp", backwards),
        *(_sign_problem(values[name], name, "a positive price", strict=True) for name in PRICES),
        _sign_problem(values["volume"], "volume", "a volume of 0 or more", strict=False),
        _Problem(values["high"] < top, "high", high),
        _Problem(values["low"] > bottom, "low", low),
    ]


def _versus_previous(nanos: Nanos, compare: np.ufunc) -> Mask:
    """Bars whose time compares so to the previous bar's (not a difference: that can overflow)."""
    return np.concatenate(([False], compare(nanos[1:], nanos[:-1])))


def _sign_problem(numbers: Floats, name: str, expected: str, *, strict: bool) -> _Problem:
    bad = numbers <= 0 if strict else numbers < 0
    return _Problem(bad, name, lambda row: f"{_number(numbers[row])} is not {expected}")


def _raise_first(problems: Iterable[_Problem], where: Callable[[int], str]) -> None:
    """DataError for the earliest broken row; on one row, the first problem listed wins."""
    found = [(int(np.argmax(p.rows)), order, p) for order, p in enumerate(problems) if p.rows.any()]
    if found:
        row, _, problem = min(found, key=lambda item: item[:2])
        raise DataError(f"{where(row)}, column {problem.column}: {problem.explain(row)}")


def _line(row: int) -> str:
    return f"line {row + 2}"  # row 0 is on line 2, under the header


def _frame_arrays(frame: pd.DataFrame) -> tuple[Nanos, dict[str, Floats]]:
    missing = [name for name in VALUES if name not in frame.columns]
    if missing:
        raise DataError(f"the bars lack the column(s) {', '.join(missing)}")
    times = frame["timestamp"] if "timestamp" in frame.columns else frame.index
    if not pd.api.types.is_datetime64_any_dtype(times) or pd.isna(times).any():
        raise DataError("bar timestamps must be datetimes (a DatetimeIndex or column), none NaT")
    stamps = pd.DatetimeIndex(times)
    nanos = (stamps if stamps.tz else stamps.tz_localize(UTC)).as_unit("ns").asi8
    values = {name: np.asarray(frame[name].to_numpy(), dtype=np.float64) for name in VALUES}
    return np.asarray(nanos, dtype=np.int64), values


def _number(value: float | np.float64) -> str:
    return repr(float(value))  # numpy 2 would show np.float64(...)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
