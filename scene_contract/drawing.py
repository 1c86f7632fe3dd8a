"""Colour pictures of class labels, instances and inverse depth, the same for every viewer.

Training draws its previews and evaluation grids with these functions and the service
draws its overlays with them, so a picture means the same wherever it is made. Class
colours come from the class table (`palette`), which the service reads from the model
card and training from its own table.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

RGB = npt.NDArray[np.uint8]

# Anchor colours of a dark-to-bright sequential map (near = bright), interpolated linearly.
_DEPTH_ANCHORS = np.array(
    [[8, 8, 24], [60, 20, 110], [170, 50, 120], [240, 120, 60], [252, 230, 140]], dtype=np.float64
)


def palette(colors: Iterable[tuple[int, tuple[int, int, int]]]) -> RGB:
    """Colour lookup table ``uint8 [256, 3]`` from ``(train_id, (r, g, b))`` pairs.

    Row ``train_id`` is that class's colour; rows without a class (the ignore index
    included) are black, so ``table[semantic]`` colours any semantic map.
    """
    table = np.zeros((256, 3), dtype=np.uint8)
    for train_id, color in colors:
        table[train_id] = color
    return table


def colorize_instances(instance: npt.NDArray[np.integer]) -> RGB:
    """A stable, distinct colour per instance id ``[H, W]``; 0 (no instance) is black."""
    ids = instance.astype(np.uint64)
    h = (ids * np.uint64(2654435761)) % np.uint64(2**32)
    h ^= h >> np.uint64(15)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], axis=-1)
    rgb = (64 + rgb.astype(np.uint16) * 3 // 4).astype(np.uint8)  # keep every instance visible on black
    rgb[instance == 0] = 0
    return rgb


def colorize_inverse_depth(inverse_depth: npt.NDArray[np.floating], max_inverse: float = 0.5) -> RGB:
    """Colour map of inverse depth ``[H, W]`` in 1/m: 0 (sky, far) dark, ``max_inverse`` bright.

    NaN (no measurement) is drawn grey.
    """
    x = np.clip(np.nan_to_num(inverse_depth, nan=0.0) / max_inverse, 0.0, 1.0)
    # Square root spreads the many far pixels over more of the map.
    position = np.sqrt(x) * (len(_DEPTH_ANCHORS) - 1)
    stops = np.arange(len(_DEPTH_ANCHORS))
    rgb = np.stack([np.interp(position, stops, _DEPTH_ANCHORS[:, c]) for c in range(3)], axis=-1)
    rgb[np.isnan(inverse_depth)] = 128
    colors: RGB = np.rint(rgb).astype(np.uint8)
    return colors
