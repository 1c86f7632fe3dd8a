import math

import numpy as np
import pytest

from training.data.classes import IGNORE_INDEX, train_id
from training.data.pseudo_depth import GroundCamera, ground_depth_by_row, pseudo_depth

ROAD, WALL, CAR, SKY = (train_id(n) for n in ("road", "building", "car", "sky"))
# 8 pixels wide, focal length 1.0 x width = 8 px, camera 1 m up, horizon at row 6 of 12
# (row centres at 6.5, 7.5, ...), nothing near the horizon dropped.
CAMERA = GroundCamera(horizon=0.5, focal_ratio=1.0, height_m=1.0, min_rows=0, max_depth_m=100)


def street() -> np.ndarray:
    """Sky above row 7, road from row 7 down, and a wall standing on the road at row 9."""
    labels = np.full((12, 8), SKY, dtype=np.uint8)
    labels[7:] = ROAD
    labels[3:9, 2:5] = WALL
    return labels


def test_ground_lies_where_the_plane_puts_it() -> None:
    # Row v's centre is v + 0.5 - 6 rows below the horizon: Z = f * h / that.
    expected = [8 / (v + 0.5 - 6) for v in range(7, 12)]
    depth = pseudo_depth(street(), CAMERA)
    assert depth[7:, 0].tolist() == pytest.approx(expected)
    assert depth[7:, 7].tolist() == pytest.approx(expected)


def test_a_wall_stands_at_the_depth_of_its_contact_and_sky_is_infinite() -> None:
    depth = pseudo_depth(street(), CAMERA)
    contact = 8 / (9.5 - 6)  # the road row just below the wall's bottom row (8)
    assert depth[3:9, 2:5] == pytest.approx(np.full((6, 3), contact))
    assert np.isinf(depth[:7, 0]).all() and np.isinf(depth[:3, 2:5]).all()


def test_what_the_geometry_cannot_tell_is_left_unmeasured() -> None:
    labels = street()
    labels[9:, 0] = CAR  # runs off the bottom edge: contact hidden
    labels[1:3, 3] = CAR  # stands on the wall, not on the ground
    labels[:, 6] = IGNORE_INDEX  # unlabelled
    depth = pseudo_depth(labels, CAMERA)
    assert np.isnan(depth[9:, 0]).all()
    assert np.isnan(depth[1:3, 3]).all()
    assert np.isnan(depth[:, 6]).all()


def test_a_thin_unlabelled_seam_does_not_break_the_contact() -> None:
    labels = street()
    labels[9, 2:5] = IGNORE_INDEX  # the wall's contact row becomes a seam; road again below it
    depth = pseudo_depth(labels, CAMERA)
    assert depth[3:9, 2] == pytest.approx(np.full(6, 8 / (10.5 - 6)))


def test_ground_near_or_above_the_horizon_and_too_far_is_unmeasured() -> None:
    rows = ground_depth_by_row(
        GroundCamera(horizon=0.5, focal_ratio=1.0, height_m=1.0, max_depth_m=5.0), 360, 8
    )
    assert np.isnan(rows[:183]).all()  # above the horizon, and within 3 rows of it
    finite = rows[np.isfinite(rows)]
    assert finite.max() <= 5.0 and math.isclose(float(rows[-1]), 8 / (359.5 - 180), rel_tol=1e-6)
