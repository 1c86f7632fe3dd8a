"""Instance centres as peaks of the vote histogram (Panoptic-DeepLab style), numpy only.

The votes are splatted into a 2-D histogram, lightly smoothed; its local maxima
(max-filter non-maximum suppression) with enough votes nearby are the centres, each
refined to the mean of the votes around it. A few milliseconds at 128 x 256, which is
why this is the service's default clusterer.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from service.votes import FloatArray, IntArray, Votes


def peak_centres(
    votes: Votes,
    height: int,
    width: int,
    min_votes: float,
    sigma: float,
    nms_radius: int,
    vote_window: int,
    top_k: int,
) -> tuple[FloatArray, IntArray]:
    """Centres ``[K, 2]`` (y, x) and their vote group ``[K]`` from vote-histogram peaks."""
    blur = _gaussian_kernel(sigma)
    margin = len(blur) // 2 + max(nms_radius, vote_window) + 1
    histogram, (top, left) = _vote_histogram(votes, height, width, margin)
    if histogram.size == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.intp)
    smoothed = _separable(histogram, blur)
    counts = _separable(histogram, np.ones(2 * vote_window + 1, dtype=np.float32))
    local_max = _max_filter(smoothed, nms_radius)
    # The relative tolerance keeps plateaus and float32 near-ties as candidates; the greedy
    # pass below then keeps one of each. Counts are float32 sums of bilinear weights.
    candidate = (smoothed >= local_max * (1 - 1e-5)) & (counts >= min_votes - 1e-3) & (smoothed > 0)
    group, peak_y, peak_x = np.nonzero(candidate)
    # Most votes first; lexsort's last key is the primary one.
    order = np.lexsort((peak_x, peak_y, -smoothed[group, peak_y, peak_x], -counts[group, peak_y, peak_x]))
    kept: list[int] = []
    for index in order:
        if len(kept) == top_k:
            break
        if kept:
            others = np.asarray(kept)
            near = (
                (group[others] == group[index])
                & (np.abs(peak_y[others] - peak_y[index]) <= nms_radius)
                & (np.abs(peak_x[others] - peak_x[index]) <= nms_radius)
            )
            if near.any():
                continue
        kept.append(int(index))
    keep = np.asarray(kept, dtype=np.intp)
    centres = _refine(histogram, group[keep], peak_y[keep], peak_x[keep], vote_window)
    return centres + np.array([top, left], dtype=np.float64), group[keep]


def _vote_histogram(
    votes: Votes, height: int, width: int, margin: int
) -> tuple[npt.NDArray[np.float32], tuple[int, int]]:
    """Votes splatted bilinearly onto the pixel grid, ``float32 [groups, h, w]``, and its origin.

    The histogram covers only the votes' bounding box plus ``margin`` pixels (clipped to
    the image): filters of radius up to ``margin`` then see the same values as on the
    whole image, and the things of a street scene usually fill a narrow band of it.
    Bilinear splatting keeps each vote's sub-pixel position in the histogram's first
    moment, which `_refine` reads back. Votes outside the image are left out: a
    centroid of pixels inside the image is inside it too.
    """
    inside = (
        (votes.vote_y >= 0) & (votes.vote_y <= height - 1) & (votes.vote_x >= 0) & (votes.vote_x <= width - 1)
    )
    if not inside.any():
        return np.zeros((votes.groups, 0, 0), dtype=np.float32), (0, 0)
    y, x, group = votes.vote_y[inside], votes.vote_x[inside], votes.group[inside]
    top = max(0, int(y.min()) - margin)
    left = max(0, int(x.min()) - margin)
    crop_h = min(height, int(y.max()) + 2 + margin) - top
    crop_w = min(width, int(x.max()) + 2 + margin) - left
    y0, x0 = np.floor(y).astype(np.intp), np.floor(x).astype(np.intp)
    fy, fx = y - y0, x - x0
    # One spare row and column take the zero-weight far corners of votes on the last row/column.
    padded_w = crop_w + 1
    plane = (crop_h + 1) * padded_w
    base = group * plane + (y0 - top) * padded_w + (x0 - left)
    keys = np.concatenate([base, base + 1, base + padded_w, base + padded_w + 1])
    weights = np.concatenate([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
    flat = np.bincount(keys, weights=weights, minlength=votes.groups * plane).astype(np.float32)
    histogram = flat.reshape(votes.groups, crop_h + 1, padded_w)[:, :crop_h, :crop_w]
    return histogram, (top, left)


def _gaussian_kernel(sigma: float) -> npt.NDArray[np.float32]:
    """Normalised 1-D Gaussian taps out to 2.5 sigma; ``sigma <= 0`` gives the identity."""
    if sigma <= 0:
        return np.ones(1, dtype=np.float32)
    radius = max(1, math.ceil(2.5 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel: npt.NDArray[np.float32] = (taps / taps.sum()).astype(np.float32)
    return kernel


def _separable(
    histogram: npt.NDArray[np.float32], kernel: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """The same 1-D ``kernel`` along rows and columns of ``[G, h, w]``, zero outside.

    Shifted adds rather than BLAS (banded matrix products): BLAS would be faster on an
    idle machine, but its threads spin against ONNX Runtime's and other requests' under
    load, which made this step 20x slower in our measurements.
    """
    radius = len(kernel) // 2
    result = histogram
    for axis in (1, 2):
        size = result.shape[axis]
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(result, pad)
        window = [slice(None)] * 3
        accumulated = np.zeros_like(result)
        scratch = np.empty_like(result)
        for shift, weight in enumerate(kernel):
            window[axis] = slice(shift, shift + size)
            np.multiply(padded[tuple(window)], weight, out=scratch)
            accumulated += scratch
        result = accumulated
    return result


def _max_filter(array: npt.NDArray[np.float32], radius: int) -> npt.NDArray[np.float32]:
    """Maximum over the ``(2 radius + 1)`` square around each pixel of ``[G, h, w]``."""
    result = array
    for axis in (1, 2):
        size = array.shape[axis]
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(result, pad, constant_values=-np.inf)
        window = [slice(None)] * 3
        window[axis] = slice(0, size)
        result = padded[tuple(window)].copy()
        for shift in range(1, 2 * radius + 1):
            window[axis] = slice(shift, shift + size)
            np.maximum(result, padded[tuple(window)], out=result)
    return result


def _refine(
    histogram: npt.NDArray[np.float32], group: IntArray, peak_y: IntArray, peak_x: IntArray, radius: int
) -> FloatArray:
    """Centres ``[K, 2]`` (y, x): the mean of the votes within ``radius`` of each peak.

    One mean-shift step: the grid peak is only pixel-accurate, and two touching objects'
    centroids can be a couple of pixels apart.
    """
    _, height, width = histogram.shape
    steps = np.arange(-radius, radius + 1)
    ys = peak_y[:, None, None] + steps[None, :, None]
    xs = peak_x[:, None, None] + steps[None, None, :]
    valid = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    mass = np.where(
        valid, histogram[group[:, None, None], np.clip(ys, 0, height - 1), np.clip(xs, 0, width - 1)], 0.0
    ).astype(np.float64)
    total = mass.sum(axis=(1, 2))
    centre_y = (mass * ys).sum(axis=(1, 2)) / total
    centre_x = (mass * xs).sum(axis=(1, 2)) / total
    return np.stack([centre_y, centre_x], axis=1).reshape(-1, 2)
