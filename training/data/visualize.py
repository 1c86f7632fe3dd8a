"""Colour pictures of this project's labels for previews and evaluation grids.

The colour maps themselves are `scene_contract.drawing`'s, shared with the service.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from scene_contract.drawing import RGB, colorize_instances, colorize_inverse_depth
from training.data.classes import palette

__all__ = ["colorize_instances", "colorize_inverse_depth", "colorize_semantic"]


def colorize_semantic(semantic: npt.NDArray[np.integer]) -> RGB:
    """Class colours ``uint8 [H, W, 3]`` for train ids ``[H, W]`` (ignore index: black)."""
    colors: RGB = palette()[semantic.astype(np.intp)]
    return colors
