import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.sample import DataConfigError
from training.realdepth import (
    cityscapes_disparity_to_depth,
    constant_baseline,
    depth_metrics,
    project_lidar,
    read_measured_frames,
)


def test_median_scaled_metrics_by_hand() -> None:
    truth = np.array([1.0, 2.0, 4.0, np.nan])
    predicted = np.array([2.0, 4.0, 10.0, 3.0])  # median 4 against the truth's 2: scale 0.5
    metrics = depth_metrics(predicted, truth)
    assert metrics["scale"] == pytest.approx(0.5)
    # Scaled: 1, 2, 5 -> relative errors 0, 0, 0.25.
    assert metrics["abs_rel"] == pytest.approx(0.25 / 3)
    assert metrics["delta1"] == pytest.approx(2 / 3)  # 5 / 4 = 1.25 is not < 1.25
    assert metrics["spearman"] == pytest.approx(1.0)
    assert metrics["pixels"] == 3


def test_truth_beyond_80_m_is_left_out_and_predictions_are_clipped_to_it() -> None:
    truth = np.array([10.0, 20.0, 40.0, 500.0])
    predicted = np.array([10.0, 20.0, np.inf, 20.0])  # the third "at infinity" (sky)
    metrics = depth_metrics(predicted, truth)
    assert metrics["pixels"] == 3 and metrics["scale"] == pytest.approx(1.0)
    assert metrics["abs_rel"] == pytest.approx((80 - 40) / 40 / 3)


def test_reversed_order_and_a_constant() -> None:
    truth = np.array([1.0, 2.0, 3.0])
    assert depth_metrics(np.array([3.0, 2.0, 1.0]), truth)["spearman"] == pytest.approx(-1.0)
    flat = constant_baseline(truth)
    assert flat["abs_rel"] == pytest.approx((1 + 0 + 1 / 3) / 3)
    assert np.isnan(flat["spearman"])


def test_cityscapes_disparity() -> None:
    values = np.array([0, 1, 257, 2 * 256 + 1], dtype=np.uint16)
    depth = cityscapes_disparity_to_depth(values)
    assert np.isnan(depth[:2]).all()  # 0 = invalid; 1 means disparity 0
    assert depth[2:].tolist() == pytest.approx([0.209 * 2262.5, 0.209 * 2262.5 / 2], rel=1e-6)


def test_lidar_points_land_on_their_pixels_and_the_nearer_wins() -> None:
    # Camera = LiDAR frame, focal 10 px, centre (5, 5): u = 10 x / z + 5, v = 10 y / z + 5.
    lidar2img = np.array([[10, 0, 5, 0], [0, 10, 5, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    points = np.array(
        [[0, 0, 10, 0], [0, 0, 5, 0], [2, 1, 10, 0], [0, 0, -3, 0], [100, 0, 10, 0]], dtype=np.float32
    )
    depth = project_lidar(points, lidar2img, 10, 10)
    assert depth[5, 5] == pytest.approx(5.0)  # two points on one pixel: the nearer kept
    assert depth[6, 7] == pytest.approx(10.0)  # u = 10 * 2 / 10 + 5, v = 10 * 1 / 10 + 5
    assert np.isfinite(depth).sum() == 2  # behind the camera and off the image: dropped


def test_a_measured_frames_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cityscapes_tiny"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(folder / "a_leftImg8bit.png")
    Image.fromarray(np.full((4, 8), 257, np.uint16)).save(folder / "a_disparity.png")
    Image.fromarray(np.zeros((4, 8), np.uint8)).save(folder / "a_gtFine_labelIds.png")
    (frame,) = read_measured_frames(tmp_path)
    assert frame.name == "cityscapes/a" and frame.semantic is not None
    assert np.allclose(frame.depth, 0.209 * 2262.5)
    kitti = tmp_path / "kitti"
    kitti.mkdir()
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(kitti / "000000.png")
    np.zeros((1, 4), np.float32).tofile(kitti / "000000.bin")
    with (kitti / "000000_calib.pkl").open("wb") as f:
        pickle.dump({"lidar2img": np.eye(4)}, f)  # a numpy array: not plain data
    with pytest.raises(DataConfigError, match="only plain data"):
        read_measured_frames(tmp_path)
    with pytest.raises(DataConfigError, match="no cityscapes_tiny"):
        read_measured_frames(tmp_path / "kitti")
