"""Market data: synthetic bars, the CSV format and its refusals, slicing by time."""

import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workfleet.operations.backtest.bars import bars_from_frame
from workfleet.operations.marketdata import (
    TIMEFRAMES,
    DataError,
    generate,
    parse_csv,
    slice_bars,
    to_csv,
)

HEADER = "timestamp,open,high,low,close,volume"
# four good bars: line 1 is the header, the bars are on lines 2..5
GOOD = [
    "2024-03-01T00:00:00Z,10,11,9,10.5,100",
    "2024-03-01T00:01:00Z,10.5,12,10,11,200",
    "2024-03-01T00:02:00Z,11,11.5,10.5,11,0",
    "2024-03-01T00:03:00Z,11,11,10,10,50",
]


def csv(*lines: str, header: str = HEADER) -> bytes:
    return "\n".join([header, *lines]).encode() + b"\n"


def with_line(number: int, text: str) -> bytes:
    """The good file with its line `number` (1-based, header = 1) replaced by `text`."""
    lines = list(GOOD)
    lines[number - 2] = text
    return csv(*lines)


def lag1_autocorrelation(frame: pd.DataFrame) -> float:
    returns = frame["close"].to_numpy()[1:] / frame["close"].to_numpy()[:-1] - 1.0
    return float(np.corrcoef(returns[1:], returns[:-1])[0, 1])


# --- generate ---------------------------------------------------------------------------------


def test_the_same_arguments_give_the_same_bytes_and_another_seed_other_bytes() -> None:
    first = to_csv(generate(bars=500, timeframe="5m", seed=7, autocorrelation=0.2))
    again = to_csv(generate(bars=500, timeframe="5m", seed=7, autocorrelation=0.2))
    other = to_csv(generate(bars=500, timeframe="5m", seed=8, autocorrelation=0.2))
    assert first == again
    assert first != other


def test_a_longer_series_starts_with_the_shorter_one() -> None:
    short = generate(bars=300, timeframe="1h", seed=3, autocorrelation=0.5)
    long = generate(bars=1000, timeframe="1h", seed=3, autocorrelation=0.5)
    pd.testing.assert_frame_equal(long.iloc[:300], short, check_exact=True)


def test_a_generated_series_is_pinned_to_its_bytes() -> None:
    # Datasets are stored under the SHA-256 of these bytes: anything that changes them (this
    # generator, numpy's random streams) changes every generated dataset, so it must be deliberate.
    data = to_csv(generate(bars=1000, timeframe="1h", seed=42, autocorrelation=0.3))
    digest = "822a129c58cb89133b569704d993a5792f1859f288ff13188f30110dcb593b7e"
    assert hashlib.sha256(data).hexdigest() == digest


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    bars=st.integers(min_value=1, max_value=400),
    timeframe=st.sampled_from(sorted(TIMEFRAMES)),
    autocorrelation=st.floats(min_value=-0.99, max_value=0.99),
    start_price=st.floats(min_value=1e-3, max_value=1e6),
)
def test_generated_bars_are_consistent_for_any_seed_timeframe_and_autocorrelation(
    seed: int, bars: int, timeframe: str, autocorrelation: float, start_price: float
) -> None:
    frame = generate(
        bars=bars,
        timeframe=timeframe,
        seed=seed,
        start_price=start_price,
        autocorrelation=autocorrelation,
    )
    o, h, low, c, v = (
        frame[name].to_numpy() for name in ("open", "high", "low", "close", "volume")
    )
    assert len(frame) == bars
    assert np.isfinite(frame.to_numpy()).all()
    assert (h >= np.maximum(o, c)).all()
    assert (low <= np.minimum(o, c)).all()
    assert (low > 0).all()
    assert (v > 0).all()
    assert o[0] == start_price
    assert (o[1:] == c[:-1]).all()  # each bar opens at the previous close


def test_generated_bars_have_the_shape_the_backtest_engine_reads() -> None:
    frame = generate(bars=50, timeframe="1d", seed=1)
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert frame.index.name == "timestamp"
    assert str(frame.index.dtype) == "datetime64[ns, UTC]"
    assert (frame.dtypes == np.float64).all()
    assert len(bars_from_frame(frame)) == 50


@pytest.mark.parametrize("timeframe", sorted(TIMEFRAMES))
def test_bars_are_spaced_by_the_timeframe_from_the_start(timeframe: str) -> None:
    start = datetime(2021, 6, 1, 12, 30, tzinfo=UTC)
    frame = generate(bars=20, timeframe=timeframe, seed=0, start=start)
    step = pd.Timedelta(seconds=TIMEFRAMES[timeframe])
    assert frame.index[0] == pd.Timestamp(start)
    assert (frame.index[1:] - frame.index[:-1] == step).all()


def test_a_naive_start_is_taken_as_utc() -> None:
    naive = generate(bars=3, timeframe="1m", seed=0, start=datetime(2022, 1, 1))  # noqa: DTZ001
    aware = generate(bars=3, timeframe="1m", seed=0, start=datetime(2022, 1, 1, tzinfo=UTC))
    assert naive.equals(aware)


@pytest.mark.parametrize("planted", [0.3, -0.3])
def test_a_planted_autocorrelation_is_measured_in_the_returns(planted: float) -> None:
    frame = generate(bars=100_000, timeframe="1m", seed=11, autocorrelation=planted)
    assert lag1_autocorrelation(frame) == pytest.approx(planted, abs=0.03)


def test_without_a_planted_autocorrelation_returns_are_uncorrelated() -> None:
    frame = generate(bars=100_000, timeframe="1m", seed=11)
    assert abs(lag1_autocorrelation(frame)) < 0.02


def test_volatility_changes_with_the_regime() -> None:
    closes = generate(bars=20_000, timeframe="1h", seed=5)["close"].to_numpy()
    returns = closes[1:] / closes[:-1] - 1.0
    window_std = returns[: len(returns) // 100 * 100].reshape(-1, 100).std(axis=1)
    # calm windows against wild ones: the regimes' volatilities differ by more than 3x
    assert np.percentile(window_std, 95) > 2 * np.percentile(window_std, 5)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"timeframe": "2h"}, "unknown timeframe '2h': use one of 1m, 5m, 15m, 1h, 4h, 1d"),
        ({"bars": 0}, "bars must be at least 1, got 0"),
        ({"autocorrelation": 1.0}, "autocorrelation must lie strictly between -1 and 1"),
        ({"autocorrelation": -1.0}, "autocorrelation must lie strictly between -1 and 1"),
        ({"autocorrelation": float("nan")}, "autocorrelation must lie strictly between -1 and 1"),
        ({"seed": -1}, "seed must be 0 or more, got -1"),
        ({"start_price": 0.0}, "start_price must be a positive number"),
        ({"bars": 200_000, "timeframe": "1d"}, "do not fit in 1677..2262"),
    ],
)
def test_generate_refuses_bad_arguments_saying_which(
    arguments: dict[str, object], message: str
) -> None:
    call: dict[str, object] = {"bars": 10, "timeframe": "1h", "seed": 1, **arguments}
    with pytest.raises(DataError, match=re.escape(message)):
        generate(**call)


# --- parse_csv and to_csv ---------------------------------------------------------------------


def test_a_good_file_is_read_into_utc_indexed_float_columns() -> None:
    frame = parse_csv(csv(*GOOD))
    assert frame.index.tolist() == [
        pd.Timestamp("2024-03-01T00:00:00Z") + pd.Timedelta(minutes=m) for m in range(4)
    ]
    assert str(frame.index.dtype) == "datetime64[ns, UTC]"
    assert frame["high"].tolist() == [11.0, 12.0, 11.5, 11.0]
    assert frame["volume"].tolist() == [100.0, 200.0, 0.0, 50.0]
    assert (frame.dtypes == np.float64).all()


@pytest.mark.parametrize(
    "stamps",
    [
        ["2024-03-01T00:00:00+00:00", "2024-03-01T00:01:00+00:00"],
        ["2024-03-01T00:00:00", "2024-03-01 00:01:00"],
        ["2024-03-01T01:00:00+01:00", "2024-03-01T01:01:00+01:00"],
        ["1709251200", "1709251260"],
        ["1709251200.0", "1709251260.0"],
    ],
    ids=["plus-zero", "no-zone", "other-offset", "epoch-integers", "epoch-decimals"],
)
def test_every_timestamp_style_reads_as_the_same_utc_times(stamps: list[str]) -> None:
    lines = [f"{stamps[0]},10,11,9,10.5,100", f"{stamps[1]},10.5,12,10,11,200"]
    assert parse_csv(csv(*lines)).equals(parse_csv(csv(*GOOD[:2])))


def test_decimal_epoch_seconds_keep_their_fraction() -> None:
    frame = parse_csv(csv("1709251200.25,10,11,9,10.5,100", "1709251201.123456,10,11,9,10.5,100"))
    assert frame.index[0] == pd.Timestamp("2024-03-01T00:00:00.25Z")
    assert frame.index[1] == pd.Timestamp("2024-03-01T00:00:01.123456Z")


def test_columns_may_come_in_any_order_and_case() -> None:
    shuffled = csv(
        "100,10.5,11,9,2024-03-01T00:00:00Z,10", header=" Volume,CLOSE,high,low,timestamp,open"
    )
    assert parse_csv(shuffled).equals(parse_csv(csv(GOOD[0])))


def test_a_byte_order_mark_and_trailing_blank_lines_are_ignored() -> None:
    padded = b"\xef\xbb\xbf" + csv(*GOOD).replace(b"\n", b"\r\n") + b"\r\n\n"
    assert parse_csv(padded).equals(parse_csv(csv(*GOOD)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\n", "the file is empty"),
        (csv(), "line 2: the file has a header but no bars"),
        (
            csv(*GOOD, header="timestamp,open,high,low,close"),
            "line 1 (header): missing 'volume'",
        ),
        (
            csv(*(line + ",1" for line in GOOD), header=HEADER + ",adj_close"),
            "line 1 (header): unexpected 'adj_close'",
        ),
        (
            csv(*GOOD, header="timestamp,open,high,low,close,close"),
            "line 1 (header): missing 'volume'; repeated 'close'",
        ),
        (with_line(3, GOOD[1] + ",7"), "line 3: expected 6 fields, found 7"),
        (with_line(4, "2024-03-01T00:02:00Z,11,11.5,10.5,11"),
         "line 4: expected 6 fields, found 5"),
        (with_line(3, ""), "line 3: expected 6 fields, found 1"),
        (csv(*GOOD)[:-1] + b"\xe9\n", "line 5: not UTF-8 text"),
        (with_line(3, "2024-03-32T00:01:00Z,10.5,12,10,11,200"),
         "line 3, column timestamp: '2024-03-32T00:01:00Z' is not a UTC ISO 8601 time"),
        (with_line(3, ",10.5,12,10,11,200"), "line 3, column timestamp: missing value"),
        (csv("1709251200,10,11,9,10.5,100", "2024-03-01T00:01:00Z,10.5,12,10,11,200"),
         "line 3, column timestamp: '2024-03-01T00:01:00Z' is not a time in epoch seconds"),
        (csv("1709251200000,10,11,9,10.5,100"),
         "line 2, column timestamp: '1709251200000' is not a time in epoch seconds (1677..2262)"),
        (with_line(4, "2024-03-01T00:02:00Z,11,11.5x,10.5,11,0"),
         "line 4, column high: '11.5x' is not a finite number"),
        (with_line(4, "2024-03-01T00:02:00Z,11,inf,10.5,11,0"),
         "line 4, column high: 'inf' is not a finite number"),
        (with_line(4, "2024-03-01T00:02:00Z,11,NA,10.5,11,0"),
         "line 4, column high: 'NA' is not a finite number"),
        (with_line(3, "2024-03-01T00:01:00Z,10.5,12,10,,200"),
         "line 3, column close: missing value"),
        (with_line(4, "2024-03-01T00:01:00Z,11,11.5,10.5,11,0"),
         "line 4, column timestamp: 2024-03-01T00:01:00Z repeats the previous bar's timestamp"),
        (with_line(4, "2024-03-01T00:00:30Z,11,11.5,10.5,11,0"),
         "line 4, column timestamp: 2024-03-01T00:00:30Z comes before the previous bar's "
         "2024-03-01T00:01:00Z"),
        (with_line(2, "2024-03-01T00:00:00Z,0,11,0,10.5,100"),
         "line 2, column open: 0.0 is not a positive price"),
        (with_line(5, "2024-03-01T00:03:00Z,11,11,-10,10,50"),
         "line 5, column low: -10.0 is not a positive price"),
        (with_line(5, "2024-03-01T00:03:00Z,11,11,10,10,-50"),
         "line 5, column volume: -50.0 is not a volume of 0 or more"),
        (with_line(3, "2024-03-01T00:01:00Z,10.5,10.9,10,11,200"),
         "line 3, column high: high 10.9 is below max(open, close) 11.0"),
        (with_line(3, "2024-03-01T00:01:00Z,10.5,12,10.6,11,200"),
         "line 3, column low: low 10.6 is above min(open, close) 10.5"),
    ],
)  # fmt: skip
def test_parse_csv_refuses_a_bad_file_naming_the_line_and_column(data: bytes, message: str) -> None:
    with pytest.raises(DataError) as refusal:
        parse_csv(data)
    assert str(refusal.value).startswith(message)


def test_of_several_problems_the_earliest_line_is_reported() -> None:
    data = csv(
        GOOD[0],
        "2024-03-01T00:01:00Z,10.5,12,10,11,-1",  # line 3: negative volume
        "2024-03-01T00:02:00Z,11,11.5,10.5,,0",  # line 4: missing close
    )
    with pytest.raises(DataError, match=r"^line 3, column volume"):
        parse_csv(data)


def test_a_problem_on_the_last_of_100000_lines_is_found() -> None:
    text = to_csv(generate(bars=100_000, timeframe="1m", seed=2)).rstrip(b"\n")
    last = text.rfind(b"\n") + 1
    broken = text[:last] + text[last:].replace(b"Z,", b"Z,-", 1)  # a negative open
    with pytest.raises(DataError, match=r"^line 100001, column open: -"):
        parse_csv(broken)


def test_to_csv_writes_the_canonical_form() -> None:
    frame = parse_csv(
        csv(
            "2024-03-01 00:00:00+00:00, 10.50, 11, 9, 1.05e1, 100",
            "2024-03-01T00:01,10.5,12,10,11,2e2",
        )
    )
    assert to_csv(frame) == (
        b"timestamp,open,high,low,close,volume\n"
        b"2024-03-01T00:00:00Z,10.5,11.0,9.0,10.5,100.0\n"
        b"2024-03-01T00:01:00Z,10.5,12.0,10.0,11.0,200.0\n"
    )


def test_to_csv_writes_fractions_of_a_second_only_when_a_bar_has_one() -> None:
    frame = parse_csv(csv("2024-03-01T00:00:00Z,1,1,1,1,1", "2024-03-01T00:00:00.0005Z,1,1,1,1,1"))
    assert b"\n2024-03-01T00:00:00.000000Z," in to_csv(frame)
    assert b"\n2024-03-01T00:00:00.000500Z," in to_csv(frame)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), bars=st.integers(1, 300))
def test_parse_csv_reads_back_exactly_what_to_csv_wrote(seed: int, bars: int) -> None:
    frame = generate(bars=bars, timeframe="15m", seed=seed, autocorrelation=0.4)
    again = parse_csv(to_csv(frame))
    pd.testing.assert_frame_equal(again, frame, check_exact=True)
    assert to_csv(again) == to_csv(frame)


def test_awkward_floats_and_nanosecond_times_survive_the_round_trip() -> None:
    index = pd.DatetimeIndex(
        [pd.Timestamp("1999-12-31T23:59:59.999999999Z"), pd.Timestamp("2200-01-01T00:00:00Z")],
        name="timestamp",
    ).as_unit("ns")
    frame = pd.DataFrame(
        {
            "open": [0.1 + 0.2, 1e16],
            "high": [1 / 3, 1e16 + 2],
            "low": [5e-324, 1e16],
            "close": [0.3, 1e16],
            "volume": [0.0, 123456789.123456789],
        },
        index=index,
    )
    pd.testing.assert_frame_equal(parse_csv(to_csv(frame)), frame, check_exact=True)


def test_to_csv_takes_naive_times_in_a_timestamp_column_as_utc() -> None:
    frame = parse_csv(csv(*GOOD))
    as_column = frame.reset_index()
    as_column["timestamp"] = as_column["timestamp"].dt.tz_localize(None)
    assert to_csv(as_column) == to_csv(frame)


def test_to_csv_refuses_bars_parse_csv_would_refuse() -> None:
    frame = parse_csv(csv(*GOOD))
    frame.loc[frame.index[2], "close"] = np.nan
    with pytest.raises(DataError, match=r"^bar 2 at 2024-03-01T00:02:00Z, column close: missing"):
        to_csv(frame)
    with pytest.raises(DataError, match="the bars lack the column"):
        to_csv(frame.drop(columns="volume"))


# --- slice_bars -------------------------------------------------------------------------------

HOURS = generate(bars=48, timeframe="1h", seed=4, start=datetime(2024, 1, 1, tzinfo=UTC))


def hour(n: int) -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=n)


def test_a_slice_includes_its_start_and_excludes_its_end() -> None:
    cut = slice_bars(HOURS, hour(10), hour(20))
    assert cut.index[0] == hour(10)
    assert cut.index[-1] == hour(19)
    assert len(cut) == 10


def test_back_to_back_slices_share_no_bar_and_miss_none() -> None:
    parts = [slice_bars(HOURS, None, hour(24)), slice_bars(HOURS, hour(24), None)]
    assert pd.concat(parts).equals(HOURS)


def test_bounds_between_bars_naive_or_in_other_zones_cut_at_the_same_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    cut = slice_bars(
        HOURS,
        datetime(2024, 1, 1, 5, 30),  # noqa: DTZ001 (a naive bound is UTC)
        datetime(2024, 1, 1, 9, 0, tzinfo=plus_two),  # 07:00 UTC
    )
    assert cut.index.tolist() == [hour(6)]


def test_no_bounds_keep_every_bar() -> None:
    assert slice_bars(HOURS, None, None).equals(HOURS)


@pytest.mark.parametrize(
    ("start", "end"),
    [(hour(100), None), (None, hour(0)), (hour(5), hour(5)), (hour(9), hour(3))],
)
def test_a_slice_without_bars_is_refused_naming_the_data_range(
    start: datetime | None, end: datetime | None
) -> None:
    with pytest.raises(DataError) as refusal:
        slice_bars(HOURS, start, end)
    assert str(refusal.value).endswith(
        "the data covers 2024-01-01T00:00:00Z to 2024-01-02T23:00:00Z (48 bars)"
    )
