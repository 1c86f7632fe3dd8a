"""Instance grouping: per-pixel centroid offsets to an instance map, numpy only.

Every thing pixel (its predicted class is a thing class) votes for the centroid of its
instance at ``position + offset``; the votes are clustered and each thing pixel joins
the nearest cluster centre, measured from its vote. Two clusterers:

- ``"peaks"`` (default, Panoptic-DeepLab style): a 2-D histogram of the votes, lightly
  smoothed; its local maxima (max-filter non-maximum suppression) with enough votes
  nearby are the centres. A few milliseconds at 128 x 256.
- ``"optics"`` (what Kendall et al. use): scikit-learn's OPTICS on the votes, which needs
  no cluster count and no fixed cluster size. Far slower (OPTICS visits the votes one
  by one in Python: about 1 s per thousand on a 2-core test machine), so it clusters a
  subsample of the votes; scikit-learn is imported only when this method is used.

Coordinates: pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``, so its centre
is at ``(x, y) = (col + 0.5, row + 0.5)``. Offsets are differences of positions, so
they are the same in either convention; reported centroids use pixel centres and
bounding boxes pixel edges.

Grouping is class-aware by default: a pixel only joins a centre found among the votes of
its own class. Panoptic-DeepLab groups regardless of class and takes the majority; we
keep classes apart because a person partly hidden by a car can have its visible
centroid where the car's is, and class-agnostic votes cannot tell the two apart. The
instance's class is still the majority class of its pixels, which with class-aware
grouping is the class it was grouped in.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.imaging import nearest_sources

METHODS: tuple[str, ...] = ("peaks", "optics")
REFERENCE_AREA = 128 * 256  # the training resolution the count defaults are tuned for
_ASSIGN_CHUNK = 65536  # pixels per block of the pixel x centre distance matrix, to bound memory

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Instance:
    """One grouped instance.

    Attributes:
        id: its value in ``GroupedInstances.instance_map`` (1..K).
        class_id: train id, the majority class of its pixels.
        pixel_count: pixels in the instance.
        bbox: ``(x0, y0, x1, y1)`` pixel edges, inclusive-exclusive: the instance spans
            columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1``.
        centroid: ``(x, y)`` mean of its pixel centres, in pixels (pixel centres at +0.5).
    """

    id: int
    class_id: int
    pixel_count: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]


@dataclass(frozen=True)
class GroupedInstances:
    """The grouped instances of one image.

    Attributes:
        instance_map: ``uint16 [H, W]``; 0 = no instance, else the ``Instance.id``.
            Ids run 1..K by descending pixel count, ties by first pixel in raster order.
        class_of: instance id → train id, the majority class of its pixels.
    """

    instance_map: npt.NDArray[np.uint16]
    class_of: dict[int, int]

    @functools.cached_property
    def instances(self) -> tuple[Instance, ...]:
        """The K instances of ``instance_map``, in id order (`measure_instances`)."""
        return measure_instances(self.instance_map, self.class_of)


def measure_instances(instance_map: npt.NDArray[np.uint16], class_of: dict[int, int]) -> tuple[Instance, ...]:
    """Pixel count, bounding box and centroid of every id in ``instance_map`` (uint16 [H, W]).

    `measure_resized` at the map's own size. ``bbox`` is ``(x0, y0, x1, y1)`` in pixel
    edges, end-exclusive; ``centroid`` is ``(x, y)``, the mean of pixel centres (a
    pixel's centre is at +0.5). ``class_of`` maps instance id → train id (-1 if absent).
    """
    return measure_resized(instance_map, class_of, (int(instance_map.shape[0]), int(instance_map.shape[1])))


def measure_resized(
    instance_map: npt.NDArray[np.uint16], class_of: dict[int, int], size: tuple[int, int]
) -> tuple[Instance, ...]:
    """`measure_instances` of ``resize_nearest(instance_map, size)``, without making that map.

    Nearest-neighbour resizing sends each output row to one source row, and the rows
    that share a source are contiguous (likewise columns), so each source pixel stands
    for a block of output pixels: a run of rows times a run of columns, empty for some
    when shrinking. Summing over the blocks gives exactly the numbers measured on the
    resized map, in time proportional to the small one: at 2048x1024 from 128x256
    that is 64 times fewer pixels to visit.
    """
    height, width = size
    rows = nearest_sources(height, instance_map.shape[0])
    cols = nearest_sources(width, instance_map.shape[1])
    row_start, row_end, row_sum = _runs(rows, instance_map.shape[0])
    col_start, col_end, col_sum = _runs(cols, instance_map.shape[1])
    ys, xs = np.nonzero(instance_map)
    row_count, col_count = (row_end - row_start)[ys], (col_end - col_start)[xs]
    shown = (row_count > 0) & (col_count > 0)
    ys, xs, row_count, col_count = ys[shown], xs[shown], row_count[shown], col_count[shown]
    if ys.size == 0:
        return ()
    ids = instance_map[ys, xs].astype(np.intp)
    slots = int(ids.max()) + 1
    counts = np.bincount(ids, weights=row_count * col_count, minlength=slots)
    sum_y = np.bincount(ids, weights=row_sum[ys] * col_count, minlength=slots)
    sum_x = np.bincount(ids, weights=row_count * col_sum[xs], minlength=slots)
    bounds = np.zeros((4, slots), dtype=np.intp)
    bounds[0], bounds[1] = np.iinfo(np.intp).max, np.iinfo(np.intp).max
    np.minimum.at(bounds[0], ids, col_start[xs])
    np.minimum.at(bounds[1], ids, row_start[ys])
    np.maximum.at(bounds[2], ids, col_end[xs])
    np.maximum.at(bounds[3], ids, row_end[ys])
    return tuple(
        Instance(
            id=int(i),
            class_id=class_of.get(int(i), -1),
            pixel_count=int(counts[i]),
            bbox=(int(bounds[0, i]), int(bounds[1, i]), int(bounds[2, i]), int(bounds[3, i])),
            centroid=(float(sum_x[i] / counts[i] + 0.5), float(sum_y[i] / counts[i] + 0.5)),
        )
        for i in np.flatnonzero(counts)
    )


def _runs(
    sources: npt.NDArray[np.intp], source_size: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Per source pixel: first and end-exclusive output pixel fed by it, and the sum of their indices."""
    pixels = np.arange(source_size)
    start = np.searchsorted(sources, pixels, side="left")
    end = np.searchsorted(sources, pixels, side="right")
    index_sum = (start + end - 1) * (end - start) / 2.0
    return start, end, index_sum


@dataclass(frozen=True)
class _Votes:
    """The thing pixels of an image and their votes, in raster order ([N] each)."""

    rows: IntArray
    cols: IntArray
    vote_y: FloatArray  # rows, row + dy
    vote_x: FloatArray  # columns, col + dx
    group: IntArray  # the pixel's vote histogram: index of its class among those present, or 0
    groups: int


def group_instances(
    semantic: npt.NDArray[np.uint8],
    offsets: npt.NDArray[np.float32],
    thing_ids: Sequence[int],
    *,
    method: str = "peaks",
    min_votes: float = 4.0,
    min_pixels: float = 4.0,
    max_distance: float | None = 12.0,
    class_aware: bool = True,
    smoothing_sigma: float = 1.5,
    nms_radius: int = 3,
    vote_window: int = 2,
    top_k: int = 64,
    optics_max_samples: int = 1000,
    optics_eps: float = 2.0,
) -> GroupedInstances:
    """Group thing pixels into instances from their predicted centroid offsets.

    Args:
        semantic: ``uint8 [H, W]`` train ids (the model's argmax).
        offsets: ``float32 [2, H, W]``, pixels, ``(dy, dx)`` from each pixel to its
            instance's centroid. Pixels with non-finite offsets join no instance.
        thing_ids: train ids of the thing classes (e.g. ``ModelCard.thing_ids``).
        method: ``"peaks"`` or ``"optics"`` (see the module docstring).
        min_votes: votes a centre needs, counted within ``vote_window`` pixels of it
            (for OPTICS: its ``min_samples``, scaled by the subsampling). Given for a
            128 x 256 image and scaled by the image's area relative to that, at least 1.
        min_pixels: instances with fewer pixels are dropped (their pixels get 0). Scaled
            with the area like ``min_votes``, at least 1.
        max_distance: pixels whose vote lands farther than this from every centre, in
            pixels, join no instance, so stray thing pixels do not stretch an instance's
            box across the image. None assigns every thing pixel that has a centre.
        class_aware: only group pixels with centres found among votes of the same class.
        smoothing_sigma: peaks: Gaussian smoothing of the vote histogram, pixels.
        nms_radius: peaks: a centre is the highest point within this many pixels
            (Chebyshev distance); closer maxima are merged.
        vote_window: peaks: half-size in pixels of the square in which votes are counted
            for ``min_votes`` and averaged to refine the centre.
        top_k: at most this many centres (1..65535), those with the most votes.
        optics_max_samples: optics: cluster at most this many votes (evenly spaced in
            raster order); all pixels are then assigned to the centres found.
        optics_eps: optics: the reachability distance in pixels at which OPTICS'
            ordering is cut into clusters (DBSCAN-style extraction, see `_optics_centres`).

    Returns:
        The instance map ``uint16 [H, W]`` and the instances' class, size, box and centroid.

    Raises:
        ValueError: unknown ``method``, inconsistent shapes or types, or ``top_k`` out of range.
    """
    if method not in METHODS:
        raise ValueError(f"unknown instance grouping method {method!r}; valid methods: {', '.join(METHODS)}")
    if semantic.ndim != 2 or semantic.dtype != np.uint8:
        raise ValueError(f"semantic must be uint8 [H, W], got {semantic.dtype} {semantic.shape}")
    if not 1 <= top_k <= np.iinfo(np.uint16).max:
        raise ValueError(f"top_k must be between 1 and 65535 (the instance map is uint16), got {top_k}")
    height, width = semantic.shape
    if offsets.shape != (2, height, width):
        raise ValueError(f"offsets must be [2, {height}, {width}], got shape {offsets.shape}")
    area_scale = height * width / REFERENCE_AREA
    scaled_min_votes = max(1.0, min_votes * area_scale)
    scaled_min_pixels = max(1.0, min_pixels * area_scale)

    votes = _thing_votes(semantic, offsets, thing_ids, class_aware)
    if votes.rows.size == 0:
        return GroupedInstances(np.zeros((height, width), dtype=np.uint16), {})
    if method == "peaks":
        centres, centre_group = _peak_centres(
            votes, height, width, scaled_min_votes, smoothing_sigma, nms_radius, vote_window, top_k
        )
    else:
        centres, centre_group = _optics_centres(
            votes, scaled_min_votes, top_k, optics_max_samples, optics_eps
        )
    labels = _assign(votes, centres, centre_group, max_distance)
    return _instances(semantic, votes, labels, len(centres), scaled_min_pixels)


def _thing_votes(
    semantic: npt.NDArray[np.uint8],
    offsets: npt.NDArray[np.float32],
    thing_ids: Sequence[int],
    class_aware: bool,
) -> _Votes:
    is_thing = np.isin(semantic, np.asarray(thing_ids, dtype=np.int64))
    rows, cols = np.nonzero(is_thing)
    vote_y = rows + offsets[0, rows, cols].astype(np.float64)
    vote_x = cols + offsets[1, rows, cols].astype(np.float64)
    finite = np.isfinite(vote_y) & np.isfinite(vote_x)
    if not finite.all():
        rows, cols, vote_y, vote_x = rows[finite], cols[finite], vote_y[finite], vote_x[finite]
    if class_aware:
        _, group = np.unique(semantic[rows, cols], return_inverse=True)
        groups = int(group.max()) + 1 if group.size else 0
    else:
        group = np.zeros(rows.size, dtype=np.intp)
        groups = 1
    return _Votes(rows, cols, vote_y, vote_x, group.astype(np.intp), groups)


def _peak_centres(
    votes: _Votes,
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
    votes: _Votes, height: int, width: int, margin: int
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


def _optics_centres(
    votes: _Votes,
    min_votes: float,
    top_k: int,
    max_samples: int,
    eps: float,
) -> tuple[FloatArray, IntArray]:
    """Centres ``[K, 2]`` (y, x) and their vote group ``[K]``: means of OPTICS clusters.

    Clusters are cut from the reachability ordering at ``eps`` rather than by OPTICS'
    default xi extraction: xi reports the leaves of the cluster hierarchy, which split
    each instance's votes into many small clusters (on rendered scenes it found 5-10
    times more clusters than instances). Reachability beyond ``eps`` cannot change a
    cut at ``eps``, so ``max_eps = eps`` bounds the neighbourhood searches for free.
    """
    from sklearn.cluster import OPTICS  # only this path needs scikit-learn (and its import time)

    count = votes.rows.size
    sample = np.unique(np.linspace(0, count - 1, min(count, max_samples)).round().astype(np.intp))
    min_samples = max(2, round(min_votes * sample.size / count))
    points = np.stack([votes.vote_y[sample], votes.vote_x[sample]], axis=1)
    sample_group = votes.group[sample]
    centres: list[FloatArray] = []
    sizes: list[int] = []
    groups: list[int] = []
    for group in range(votes.groups):
        members = points[sample_group == group]
        if len(members) < min_samples:
            continue
        optics = OPTICS(min_samples=min_samples, max_eps=eps, cluster_method="dbscan", eps=eps)
        with warnings.catch_warnings():
            # Scattered votes with no neighbour within eps are simply no instance, not a
            # condition worth a warning in the service's log on every such image.
            warnings.filterwarnings("ignore", message="All reachability values are inf", category=UserWarning)
            labels = optics.fit(members).labels_
        for label in range(int(labels.max()) + 1):
            cluster = members[labels == label]
            centres.append(cluster.mean(axis=0))
            sizes.append(len(cluster))
            groups.append(group)
    if not centres:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.intp)
    strongest = np.argsort(-np.asarray(sizes), kind="stable")[:top_k]
    return np.asarray(centres)[strongest], np.asarray(groups, dtype=np.intp)[strongest]


def _assign(
    votes: _Votes, centres: FloatArray, centre_group: IntArray, max_distance: float | None
) -> IntArray:
    """Index of the centre nearest to each pixel's vote ``[N]``, -1 for none.

    Each vote group is matched only against its own centres, which also keeps the
    pixel x centre distance matrices small.
    """
    labels = np.full(votes.rows.size, -1, dtype=np.intp)
    limit = np.float32(np.inf if max_distance is None else max_distance**2)
    for group in range(votes.groups):
        candidates = np.flatnonzero(centre_group == group)
        if candidates.size == 0:
            continue
        centre_y = centres[candidates, 0].astype(np.float32)
        centre_x = centres[candidates, 1].astype(np.float32)
        members = np.flatnonzero(votes.group == group)
        for start in range(0, members.size, _ASSIGN_CHUNK):
            pixels = members[start : start + _ASSIGN_CHUNK]
            dy = votes.vote_y[pixels, None].astype(np.float32) - centre_y
            dx = votes.vote_x[pixels, None].astype(np.float32) - centre_x
            squared = dy * dy
            squared += dx * dx
            nearest = squared.argmin(axis=1)
            best = squared[np.arange(nearest.size), nearest]
            labels[pixels] = np.where(best <= limit, candidates[nearest], -1)
    return labels


def _instances(
    semantic: npt.NDArray[np.uint8],
    votes: _Votes,
    labels: IntArray,
    centre_count: int,
    min_pixels: float,
) -> GroupedInstances:
    """Number the groups big enough to keep and give each its majority class."""
    height, width = semantic.shape
    instance_map = np.zeros((height, width), dtype=np.uint16)
    assigned = labels >= 0
    labels, rows, cols = labels[assigned], votes.rows[assigned], votes.cols[assigned]
    counts = np.bincount(labels, minlength=centre_count)
    first = np.full(centre_count, height * width, dtype=np.intp)
    np.minimum.at(first, labels, rows * width + cols)
    kept = np.flatnonzero(counts >= min_pixels)
    kept = kept[np.lexsort((first[kept], -counts[kept]))]
    if kept.size == 0:
        return GroupedInstances(instance_map, {})
    new_id = np.zeros(centre_count, dtype=np.intp)
    new_id[kept] = np.arange(1, kept.size + 1)
    ids = new_id[labels]
    keep = ids > 0
    ids, rows, cols = ids[keep], rows[keep], cols[keep]
    instance_map[rows, cols] = ids

    slots = kept.size + 1
    class_votes = np.bincount(ids * 256 + semantic[rows, cols], minlength=slots * 256).reshape(slots, 256)
    class_id = class_votes.argmax(axis=1)
    return GroupedInstances(instance_map, {k: int(class_id[k]) for k in range(1, slots)})
