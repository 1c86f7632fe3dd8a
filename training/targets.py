"""Training targets for the three task heads, built from one ``SceneSample``.

Numpy only: this runs inside DataLoader workers, where importing torch per worker is
wasted memory and torch ops would compete with the main process for threads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from training.data.sample import SceneSample


def instance_offsets(
    instance: npt.NDArray[np.int32],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Vector from every instance pixel to the centroid of its instance.

    The centroid is the mean position of the instance's pixel centres. Because the
    offset is a difference of two positions, the half-pixel shift of the centres cancels
    and integer row/column indices give the same result.

    Args:
        instance: ``int32 [H, W]`` instance ids, 0 where the pixel belongs to no instance.

    Returns:
        offsets: ``float32 [2, H, W]``, pixels, ``(dy, dx)`` = centroid − pixel position;
            0 outside instances.
        mask: ``bool [H, W]``, True on pixels that belong to an instance.
    """
    height, width = instance.shape
    mask = instance > 0
    offsets = np.zeros((2, height, width), dtype=np.float32)
    if not mask.any():
        return offsets, mask

    rows, cols = np.nonzero(mask)
    # np.nonzero and boolean indexing both walk the array in row-major order, so
    # `compact` lines up with `rows` / `cols` element for element.
    _, compact = np.unique(instance[mask], return_inverse=True)
    counts = np.bincount(compact)
    centroid_y = np.bincount(compact, weights=rows) / counts
    centroid_x = np.bincount(compact, weights=cols) / counts
    offsets[0, rows, cols] = centroid_y[compact] - rows
    offsets[1, rows, cols] = centroid_x[compact] - cols
    return offsets, mask


def build_targets(sample: SceneSample) -> dict[str, npt.NDArray[Any]]:
    """Dense targets for the semantic, instance and depth heads.

    Returns a dict of arrays (no batch dimension; the DataLoader's default collate
    stacks them into tensors):

    - ``"semantic"``: ``int64 [H, W]`` train ids, 255 (``IGNORE_INDEX``) where unlabelled.
    - ``"instance_offsets"``: ``float32 [2, H, W]``, pixels, ``(dy, dx)`` from each pixel
      to its instance's centroid; 0 outside instances.
    - ``"instance_mask"``: ``bool [H, W]``, pixels that belong to an instance.
    - ``"inverse_depth"``: ``float32 [1, H, W]``, 1/m, 0 for sky (depth ``inf``) and 0
      where there is no measurement.
    - ``"depth_mask"``: ``bool [1, H, W]``, pixels with a depth measurement (sky included,
      since "infinitely far" is a valid inverse-depth target of 0).
    """
    offsets, instance_mask = instance_offsets(sample.instance)
    inverse_depth, depth_valid = sample.inverse_depth()
    return {
        # int64 because torch's cross-entropy wants long class indices.
        "semantic": sample.semantic.astype(np.int64),
        "instance_offsets": offsets,
        "instance_mask": instance_mask,
        "inverse_depth": inverse_depth[np.newaxis],
        "depth_mask": depth_valid[np.newaxis],
    }
