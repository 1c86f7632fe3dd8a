import math

import numpy as np
import pytest

from training.class_weights import class_weights, pixel_counts
from training.data.classes import IGNORE_INDEX


def frames() -> list[np.ndarray]:
    # Frame 1: 6 pixels of class 0, 2 of class 1. Frame 2: 4 of class 0, 2 unlabelled, 2 of class 2.
    return [
        np.array([[0, 0, 0, 0], [0, 0, 1, 1]], np.uint8),
        np.array([[0, 0, 0, 0], [IGNORE_INDEX, IGNORE_INDEX, 2, 2]], np.uint8),
    ]


def test_pixel_counts() -> None:
    counts, frame_pixels = pixel_counts(frames(), num_classes=4)
    assert counts.tolist() == [10, 2, 2, 0]
    assert frame_pixels.tolist() == [14, 8, 6, 0]  # labelled pixels of the frames each class is in


def test_median_frequency() -> None:
    counts, frame_pixels = pixel_counts(frames(), num_classes=4)
    weights = class_weights("median_frequency", counts, frame_pixels)
    frequency = np.array([10 / 14, 2 / 8, 2 / 6])
    raw = np.median(frequency) / frequency
    raw /= (raw * [10, 2, 2]).sum() / 14  # mean weight over the counted pixels is 1
    assert weights[:3] == pytest.approx(raw)
    assert weights[3] == pytest.approx(1 / ((np.median(frequency) / frequency * [10, 2, 2]).sum() / 14))


def test_inverse_log_lifts_rare_classes_and_keeps_the_mean_at_one() -> None:
    counts, frame_pixels = pixel_counts(frames(), num_classes=4)
    weights = class_weights("inverse_log", counts, frame_pixels)
    raw = np.array([1 / math.log(1.02 + p) for p in (10 / 14, 2 / 14, 2 / 14)])
    assert weights[1] / weights[0] == pytest.approx(raw[1] / raw[0])
    assert float((weights[:3] * [10, 2, 2]).sum() / 14) == pytest.approx(1.0)
    assert weights[1] > 3 * weights[0]


def test_unknown_weighting() -> None:
    with pytest.raises(ValueError, match="median_frequency"):
        class_weights("sqrt", np.ones(2, np.int64), np.ones(2, np.int64))
