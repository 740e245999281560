"""Splits, normalisation and metrics, computed by hand."""

import numpy as np
import pytest

from workfleet.operations.training.evaluation import (
    chronological_split,
    classification_report,
    majority_baseline,
    normalisation,
)


def test_the_split_is_train_then_validation_then_test_in_time_order() -> None:
    split = chronological_split(100, validation_fraction=0.2, test_fraction=0.1)
    indices = np.arange(100)
    assert list(indices[split.train]) == list(range(70))
    assert list(indices[split.validation]) == list(range(70, 90))
    assert list(indices[split.test]) == list(range(90, 100))


def test_a_split_too_small_to_measure_anything_is_refused() -> None:
    with pytest.raises(ValueError, match=r"split 37/4/4.*at least 10"):
        chronological_split(45, validation_fraction=0.1, test_fraction=0.1)


def test_normalisation_uses_the_given_rows_and_leaves_constant_features_at_zero() -> None:
    train = np.array([[1.0, 5.0], [3.0, 5.0]])
    mean, std = normalisation(train)
    np.testing.assert_array_equal(mean, [2.0, 5.0])
    np.testing.assert_array_equal(std, [1.0, 1.0])  # 5 is constant: std 1, not 0


def test_classification_report_by_hand() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    predicted = np.array([1, 1, 0, 0, 0, 1, 0, 0])
    report = classification_report(labels, predicted)
    # tp=2 fn=2 fp=1 tn=3
    assert report["confusion_matrix"] == [[3, 1], [2, 2]]
    assert report["test_accuracy"] == pytest.approx(5 / 8)
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["recall"] == pytest.approx(2 / 4)
    assert report["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_a_model_that_never_says_up_has_zero_precision_not_a_crash() -> None:
    report = classification_report(np.array([1, 0, 1]), np.array([0, 0, 0]))
    assert report["precision"] == report["recall"] == report["f1"] == 0.0


def test_the_baseline_predicts_the_class_most_common_in_training() -> None:
    train = np.array([1, 1, 1, 0])  # mostly up
    test = np.array([1, 0, 0, 0, 1])
    assert majority_baseline(train, test) == pytest.approx(2 / 5)
