"""Per-class loss weights that lift the thin classes (poles, signs, people) of street scenes.

Road, building and sky cover most pixels of a street frame; a pole covers about 1%.
Unweighted cross-entropy lets the big classes dominate, so the thin ones are learned
last and worst. Two standard answers, both from pixel counts over the training frames:

- ``median_frequency`` (Eigen & Fergus 2015, used by SegNet): ``w_c = median_f / f_c``
  with ``f_c`` the share of class ``c`` among the pixels of the frames where it occurs;
- ``inverse_log`` (ENet, Paszke et al. 2016): ``w_c = 1 / ln(k + p_c)`` with ``p_c`` the
  share of class ``c`` among all labelled pixels and ``k`` = 1.02, which bounds the
  weight of a rare class at ``1 / ln(1.02)`` ≈ 50.

Classes that never occur get weight 1. Weights are scaled so that their mean over the
counted pixels is 1, so a weighted loss stays on the scale of an unweighted one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from training.data.classes import IGNORE_INDEX

CLASS_WEIGHTINGS: tuple[str, ...] = ("none", "median_frequency", "inverse_log")
ENET_K = 1.02


def pixel_counts(
    label_maps: Iterable[npt.NDArray[np.uint8]], num_classes: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Pixels of each class, and pixels of the frames each class occurs in (``int64 [C]`` each)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    frame_pixels = np.zeros(num_classes, dtype=np.int64)
    for labels in label_maps:
        labelled = labels[labels != IGNORE_INDEX]
        frame = np.bincount(labelled.ravel(), minlength=num_classes)[:num_classes]
        counts += frame
        frame_pixels[frame > 0] += labelled.size
    return counts, frame_pixels


def class_weights(
    kind: str, counts: npt.NDArray[np.int64], frame_pixels: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """``float32 [C]`` weights of ``kind`` (one of `CLASS_WEIGHTINGS`) from `pixel_counts`."""
    if kind not in CLASS_WEIGHTINGS:
        raise ValueError(f"class weighting {kind!r} is not one of {', '.join(CLASS_WEIGHTINGS)}")
    present = counts > 0
    weights = np.ones(len(counts), dtype=np.float64)
    if kind == "median_frequency":
        frequency = counts[present] / frame_pixels[present]
        weights[present] = np.median(frequency) / frequency
    elif kind == "inverse_log":
        share = counts[present] / counts.sum()
        weights[present] = 1.0 / np.log(ENET_K + share)
    if present.any():
        weights /= np.sum(weights[present] * counts[present]) / counts[present].sum()
    return weights.astype(np.float32)
