"""The votes of instance grouping: each thing pixel's guess at its instance's centroid.

Every thing pixel (its predicted class is a thing class) votes for ``position + offset``.
The clusterers (`service.peaks`, `service.optics`) find centres among the votes, and
`service.postprocess` assigns each pixel to the centre nearest its vote; this module is
what they share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Votes:
    """The thing pixels of an image and their votes, in raster order ([N] each)."""

    rows: IntArray
    cols: IntArray
    vote_y: FloatArray  # rows, row + dy
    vote_x: FloatArray  # columns, col + dx
    group: IntArray  # the pixel's vote histogram: index of its class among those present, or 0
    groups: int


def thing_votes(
    semantic: npt.NDArray[np.uint8],
    offsets: npt.NDArray[np.float32],
    thing_ids: Sequence[int],
    class_aware: bool,
) -> Votes:
    """The votes of ``semantic``'s thing pixels, grouped by class when ``class_aware``.

    Pixels whose offset is not finite cast no vote, so they join no instance.
    """
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
    return Votes(rows, cols, vote_y, vote_x, group.astype(np.intp), groups)
