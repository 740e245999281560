"""Chronological splits and classification metrics: pure numpy, no torch."""

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

MIN_SAMPLES_PER_SPLIT = 10


@dataclass(frozen=True, slots=True)
class Split:
    """Sample index ranges, oldest first: train, then validation, then test."""

    train: slice
    validation: slice
    test: slice


def chronological_split(samples: int, validation_fraction: float, test_fraction: float) -> Split:
    """Train on the past, validate on what follows, test on the most recent samples; raises
    ValueError when a part would hold fewer than MIN_SAMPLES_PER_SPLIT samples."""
    test = round(samples * test_fraction)
    validation = round(samples * validation_fraction)
    train = samples - validation - test
    if min(train, validation, test) < MIN_SAMPLES_PER_SPLIT:
        raise ValueError(
            f"{samples} samples split {train}/{validation}/{test} (train/validation/test): each "
            f"part needs at least {MIN_SAMPLES_PER_SPLIT}; use more bars or other fractions"
        )
    return Split(slice(0, train), slice(train, train + validation), slice(train + validation, None))


def normalisation(train_features: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    """Mean and standard deviation of each feature over the training split only (a constant
    feature gets a deviation of 1, so it normalises to 0 instead of dividing by 0)."""
    mean = train_features.mean(axis=0)
    std = train_features.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def classification_report(
    labels: NDArray[np.int64], predicted: NDArray[np.int64]
) -> dict[str, Any]:
    """Accuracy, precision, recall and F1 of the `up` class (0.0 where undefined), and the
    confusion matrix [[true down, false up], [false down, true up]]."""
    tp = int(np.sum((predicted == 1) & (labels == 1)))
    tn = int(np.sum((predicted == 0) & (labels == 0)))
    fp = int(np.sum((predicted == 1) & (labels == 0)))
    fn = int(np.sum((predicted == 0) & (labels == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "test_accuracy": (tp + tn) / len(labels) if len(labels) else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def majority_baseline(train_labels: NDArray[np.int64], test_labels: NDArray[np.int64]) -> float:
    """Test accuracy of always predicting the class most common in training: what a model must
    beat to have learnt anything."""
    majority = 1 if 2 * int(train_labels.sum()) > len(train_labels) else 0
    return float(np.mean(test_labels == majority))
