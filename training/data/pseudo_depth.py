"""Depth from a semantic label map alone: a flat ground plane, with upright things standing on it.

Real street frames come without depth, but their labels imply much of it. Seen by a
level pinhole camera at height ``h`` above flat ground, a ground pixel ``v`` rows below
the horizon row ``v0`` lies at depth ``Z = f·h / (v - v0)`` (``f``: focal length in
pixels). An upright surface (a wall, a pole, a car, a person) stands where it meets
the ground, so every pixel of an upright run of a column shares the depth of the
ground pixel just below the run: its contact point. Sky is infinitely far.

What the labels cannot tell is left unmeasured (``nan``), so it teaches nothing:

- a run whose contact point is hidden: by the bottom edge of the frame, by another
  upright class below it (a building behind a car), or by unlabelled pixels;
- ground and contacts within ``min_rows`` of the horizon or above it, and anything
  farther than ``max_depth_m`` (where one row of error is many metres);
- unlabelled pixels.

A few unlabelled rows between a thing and the ground (label boundaries are drawn
loosely) do not break the contact: up to ``gap_rows`` of them are bridged.

numpy only; it runs in DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.data.classes import IGNORE_INDEX, train_id

# Classes that are the ground plane, and those that are infinitely far.
GROUND_CLASSES: tuple[str, ...] = ("road", "sidewalk", "terrain")
SKY_CLASSES: tuple[str, ...] = ("sky",)


@dataclass(frozen=True)
class GroundCamera:
    """The camera the geometry assumes, in units of the frame so it holds at any resolution.

    Attributes:
        horizon: row of the horizon as a fraction of the frame's height from the top.
        focal_ratio: focal length over the frame's width (square pixels).
        height_m: the camera's height above the ground.
        max_depth_m: farther than this is left unmeasured.
        min_rows: ground this close to the horizon (in rows at 360 rows a frame) is
            left unmeasured.
        gap_rows: unlabelled rows bridged between a thing and its contact.
    """

    horizon: float = 0.5
    focal_ratio: float = 0.8
    height_m: float = 1.3
    max_depth_m: float = 80.0
    min_rows: float = 3.0
    gap_rows: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.horizon < 1.0:
            raise ValueError(f"horizon must lie in (0, 1) of the frame's height, got {self.horizon}")
        if self.focal_ratio <= 0 or self.height_m <= 0 or self.max_depth_m <= 0:
            raise ValueError("focal_ratio, height_m and max_depth_m must be positive")


def ground_depth_by_row(camera: GroundCamera, height: int, width: int) -> npt.NDArray[np.float32]:
    """``float32 [height]``: depth in metres of flat ground at each row, ``nan`` where unmeasurable."""
    rows = np.arange(height, dtype=np.float64) + 0.5
    below = rows - camera.horizon * height
    focal = camera.focal_ratio * width
    min_below = camera.min_rows * height / 360.0
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = focal * camera.height_m / below
    depth[(below < min_below) | (depth > camera.max_depth_m)] = np.nan
    return depth.astype(np.float32)


def pseudo_depth(semantic: npt.NDArray[np.uint8], camera: GroundCamera) -> npt.NDArray[np.float32]:
    """Depth in metres ``float32 [H, W]`` from train-id labels ``uint8 [H, W]``.

    Ground rows get the plane's depth, sky ``inf``, upright runs their contact's depth,
    and everything the geometry cannot tell ``nan`` (see the module docstring).
    """
    height, width = semantic.shape
    ground = np.isin(semantic, [train_id(name) for name in GROUND_CLASSES])
    sky = np.isin(semantic, [train_id(name) for name in SKY_CLASSES])
    unlabelled = semantic == IGNORE_INDEX
    upright = ~(ground | sky | unlabelled)
    plane = ground_depth_by_row(camera, height, width)

    depth = np.full((height, width), np.nan, dtype=np.float32)
    depth[sky] = np.inf
    # Bottom-up, one row at a time across all columns: `carried` is the depth of the
    # contact point of the run each column is in, `carried_class` the run's class.
    carried = np.full(width, np.nan, dtype=np.float32)
    carried_class = np.full(width, -1, dtype=np.int32)
    gap = np.zeros(width, dtype=np.int32)
    for row in range(height - 1, -1, -1):
        labels = semantic[row].astype(np.int32)
        on_ground, is_upright, is_unlabelled = ground[row], upright[row], unlabelled[row]
        depth[row, on_ground] = plane[row]
        # A run continues only in its own class; a different thing above hides its contact.
        continues = is_upright & (carried_class == labels)
        starts = is_upright & (carried_class == -2)
        contact = np.where(continues | starts, carried, np.nan)
        depth[row, is_upright] = contact[is_upright]
        # What the next row up inherits.
        gap = np.where(is_unlabelled, gap + 1, 0)
        bridged = is_unlabelled & (gap <= camera.gap_rows)
        carried = np.where(
            on_ground, plane[row], np.where(is_upright, contact, np.where(bridged, carried, np.nan))
        ).astype(np.float32)
        # -2: "standing on ground", any upright class may start here; -1: nothing to stand on.
        next_class = np.where(is_upright, labels, -1)
        next_class = np.where(on_ground, -2, next_class)
        carried_class = np.where(bridged, carried_class, next_class).astype(np.int32)
        carried_class[np.isnan(carried) & ~on_ground] = -1
    return depth
