"""Instance grouping: per-pixel centroid offsets to an instance map, numpy only.

Every thing pixel (its predicted class is a thing class) votes for the centroid of its
instance at ``position + offset``; the votes are clustered and each thing pixel joins
the nearest cluster centre, measured from its vote. Two clusterers:

- ``"peaks"`` (default, `service.peaks`, Panoptic-DeepLab style): local maxima of the
  votes' smoothed 2-D histogram. A few milliseconds at 128 x 256.
- ``"optics"`` (`service.optics`, what Kendall et al. use): scikit-learn's OPTICS on a
  subsample of the votes, hundreds of times slower; scikit-learn is the optional
  ``scene-mtl[optics]`` extra.

This module is the recipe: votes (`service.votes`) → centres → each pixel to its
nearest centre → instances numbered by size (`service.instances` measures them).
Offsets are differences of positions, so they are the same whether a pixel is named by
its corner or its centre.

Grouping is class-aware by default: a pixel only joins a centre found among the votes of
its own class. Panoptic-DeepLab groups regardless of class and takes the majority; we
keep classes apart because a person partly hidden by a car can have its visible
centroid where the car's is, and class-agnostic votes cannot tell the two apart. The
instance's class is still the majority class of its pixels, which with class-aware
grouping is the class it was grouped in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from service import optics
from service.instances import GroupedInstances
from service.peaks import peak_centres
from service.votes import FloatArray, IntArray, Votes, thing_votes

METHODS: tuple[str, ...] = ("peaks", "optics")
# min_votes and min_pixels are given for an image of this area (128 x 256 pixels) and
# scaled by an image's area relative to it. A property of those numbers, not of a model:
# a model with another input size keeps the same counts per pixel.
COUNTS_AREA = 128 * 256
_ASSIGN_CHUNK = 65536  # pixels per block of the pixel x centre distance matrix, to bound memory


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
            ordering is cut into clusters (DBSCAN-style extraction, see `service.optics.optics_centres`).

    Returns:
        The instance map ``uint16 [H, W]`` and the instances' class, size, box and centroid.

    Raises:
        ValueError: unknown ``method``, inconsistent shapes or types, or ``top_k`` out of range.
        ImportError: ``"optics"`` without scikit-learn (the ``scene-mtl[optics]`` extra).
    """
    if method not in METHODS:
        raise ValueError(f"unknown instance grouping method {method!r}; valid methods: {', '.join(METHODS)}")
    if method == "optics" and not optics.installed():
        # Every image, not only those with things to cluster, so the error is not sporadic.
        raise ImportError(optics.MISSING)
    if semantic.ndim != 2 or semantic.dtype != np.uint8:
        raise ValueError(f"semantic must be uint8 [H, W], got {semantic.dtype} {semantic.shape}")
    if not 1 <= top_k <= np.iinfo(np.uint16).max:
        raise ValueError(f"top_k must be between 1 and 65535 (the instance map is uint16), got {top_k}")
    height, width = semantic.shape
    if offsets.shape != (2, height, width):
        raise ValueError(f"offsets must be [2, {height}, {width}], got shape {offsets.shape}")
    area_scale = height * width / COUNTS_AREA
    scaled_min_votes = max(1.0, min_votes * area_scale)
    scaled_min_pixels = max(1.0, min_pixels * area_scale)

    votes = thing_votes(semantic, offsets, thing_ids, class_aware)
    if votes.rows.size == 0:
        return GroupedInstances(np.zeros((height, width), dtype=np.uint16), {})
    if method == "peaks":
        centres, centre_group = peak_centres(
            votes, height, width, scaled_min_votes, smoothing_sigma, nms_radius, vote_window, top_k
        )
    else:
        centres, centre_group = optics.optics_centres(
            votes, scaled_min_votes, top_k, optics_max_samples, optics_eps
        )
    labels = _assign(votes, centres, centre_group, max_distance)
    return _instances(semantic, votes, labels, len(centres), scaled_min_pixels)


def _assign(
    votes: Votes, centres: FloatArray, centre_group: IntArray, max_distance: float | None
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
    votes: Votes,
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
