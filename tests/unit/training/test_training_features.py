"""Features and labels: defined from the warm-up on, and never using a bar after their own."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workfleet.operations.backtest.bars import bars_from_frame
from workfleet.operations.marketdata import generate
from workfleet.operations.training.features import (
    FEATURE_NAMES,
    WARMUP,
    feature_matrix,
    next_bar_up,
    samples,
)


def synthetic(bars: int, seed: int = 1):  # type: ignore[no-untyped-def]
    return bars_from_frame(generate(bars=bars, timeframe="1h", seed=seed))


def test_rows_before_the_warm_up_are_undefined_and_after_it_all_defined() -> None:
    matrix = feature_matrix(synthetic(300))
    assert matrix.shape == (300, len(FEATURE_NAMES))
    assert np.isnan(matrix[:WARMUP]).all()
    assert np.isfinite(matrix[WARMUP:]).all()


def test_the_label_says_whether_the_next_close_is_higher() -> None:
    bars = synthetic(50)
    labels = next_bar_up(bars)
    assert len(labels) == 49
    for t in range(49):
        assert labels[t] == int(bars.close[t + 1] > bars.close[t])


def test_samples_pair_row_t_with_the_move_after_bar_t() -> None:
    bars = synthetic(200)
    features, labels = samples(bars)
    assert len(features) == len(labels) == 200 - WARMUP - 1
    np.testing.assert_array_equal(features[0], feature_matrix(bars)[WARMUP])
    assert labels[0] == int(bars.close[WARMUP + 1] > bars.close[WARMUP])


def test_too_few_bars_give_no_samples() -> None:
    features, labels = samples(synthetic(WARMUP + 1))
    assert features.shape == (0, len(FEATURE_NAMES)) and len(labels) == 0


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(WARMUP, 298), seed=st.integers(0, 1000), scale=st.floats(0.2, 5.0))
def test_changing_bars_after_t_never_changes_features_up_to_t(
    cut: int, seed: int, scale: float
) -> None:
    bars = synthetic(300)
    frame = generate(bars=300, timeframe="1h", seed=1)
    rng = np.random.default_rng(seed)
    later = slice(cut + 1, None)
    for column in ("open", "high", "low", "close"):
        frame.iloc[later, frame.columns.get_loc(column)] *= scale
    frame.iloc[later, frame.columns.get_loc("volume")] = rng.uniform(0, 1e6, 300 - cut - 1)
    changed = bars_from_frame(frame)
    np.testing.assert_array_equal(
        feature_matrix(changed)[: cut + 1], feature_matrix(bars)[: cut + 1]
    )


@pytest.mark.parametrize("volume", [0.0, 1e9])
def test_zero_or_huge_volume_stays_finite(volume: float) -> None:
    frame = generate(bars=100, timeframe="1h", seed=2)
    frame["volume"] = volume
    assert np.isfinite(feature_matrix(bars_from_frame(frame))[WARMUP:]).all()
