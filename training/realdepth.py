"""Depth on real photos, checked against measured depth: frames, metrics and a constant baseline.

Two kinds of measured frames are read (the layout of ``realdepth/``, docs/training.md):

- ``cityscapes_tiny/``: Cityscapes frames with stereo disparity (``*_disparity.png``,
  uint16, ``(value - 1) / 256`` pixels at the full 2048-pixel width, 0 = invalid) and
  train-id labels; depth = baseline · fx / disparity.
- ``kitti/``: a KITTI frame (``000000.png``) with its LiDAR scan (``000000.bin``,
  float32 x, y, z, intensity) and calibration (``000000_calib.pkl``, whose ``lidar2img``
  maps ``[x, y, z, 1]`` to ``[u·z, v·z, z, 1]``); depth = z at each projected point.

Depth from one image is known up to scale, so predictions are judged as the field
does: scaled so their median over the measured pixels matches the truth's, clipped to
the 80 m of street depth evaluation (truth beyond it left out), then `depth_metrics`
(AbsRel, δ < 1.25, Spearman rank correlation). A constant depth, scaled the same way,
is the floor (`constant_baseline`).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr

from training.data.sample import DataConfigError, read_png

# Cityscapes stereo rig (camera_*.json of every city): baseline in metres, fx in pixels
# at the full 2048-pixel width.
CITYSCAPES_BASELINE_M = 0.209
CITYSCAPES_FX_PX = 2262.5
CITYSCAPES_FULL_WIDTH = 2048


@dataclass(frozen=True)
class MeasuredFrame:
    """A real photo and its measured depth.

    Attributes:
        name: e.g. ``"cityscapes/aachen_000000_000019"``.
        image: ``uint8 [H, W, 3]`` RGB.
        depth: ``float32 [H, W]`` metres, ``nan`` where nothing was measured.
        semantic: ``uint8 [H, W]`` train ids if the frame has labels, else ``None``.
    """

    name: str
    image: npt.NDArray[np.uint8]
    depth: npt.NDArray[np.float32]
    semantic: npt.NDArray[np.uint8] | None = None


def cityscapes_disparity_to_depth(disparity: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """Metres from Cityscapes' uint16 disparity PNG values (0 = invalid → ``nan``)."""
    pixels = (disparity.astype(np.float64) - 1.0) / 256.0
    with np.errstate(divide="ignore"):
        depth = CITYSCAPES_BASELINE_M * CITYSCAPES_FX_PX / pixels
    depth[(disparity == 0) | (pixels <= 0)] = np.nan
    return depth.astype(np.float32)


def read_cityscapes(folder: Path) -> list[MeasuredFrame]:
    frames = []
    for image_path in sorted(folder.glob("*_leftImg8bit.png")):
        stem = image_path.name.removesuffix("_leftImg8bit.png")
        disparity_path = folder / f"{stem}_disparity.png"
        if not disparity_path.is_file():
            raise DataConfigError(f"{disparity_path} not found (the disparity of {image_path.name})")
        labels_path = folder / f"{stem}_gtFine_labelIds.png"
        image = read_png(image_path, rgb=True).astype(np.uint8)
        depth = cityscapes_disparity_to_depth(read_png(disparity_path).astype(np.uint16))
        semantic = read_png(labels_path).astype(np.uint8) if labels_path.is_file() else None
        frames.append(MeasuredFrame(f"cityscapes/{stem}", image, depth, semantic))
    return frames


class _PlainDataUnpickler(pickle.Unpickler):
    """Reads plain data (dicts, lists, numbers) only: a calibration file runs no code."""

    def find_class(self, module: str, name: str) -> Any:
        raise DataConfigError(f"calibration pickle refers to {module}.{name}; only plain data is read")


def project_lidar(
    points: npt.NDArray[np.float32], lidar2img: npt.NDArray[np.float64], height: int, width: int
) -> npt.NDArray[np.float32]:
    """A sparse depth map ``float32 [height, width]`` (metres, ``nan`` elsewhere) from LiDAR points.

    ``points``: ``[P, >=3]`` x, y, z in the LiDAR frame. Points behind the camera or
    outside the image are dropped; where two land on one pixel the nearer one wins.
    """
    homogeneous = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], axis=1)
    projected = homogeneous @ lidar2img.T
    z = projected[:, 2]
    ahead = z > 0.1
    u = np.floor(projected[ahead, 0] / z[ahead]).astype(np.int64)
    v = np.floor(projected[ahead, 1] / z[ahead]).astype(np.int64)
    z = z[ahead]
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v, z = u[inside], v[inside], z[inside]
    depth = np.full((height, width), np.inf)
    np.minimum.at(depth, (v, u), z)
    depth[np.isinf(depth)] = np.nan
    return depth.astype(np.float32)


def read_kitti(folder: Path) -> list[MeasuredFrame]:
    frames = []
    for image_path in sorted(folder.glob("*.png")):
        stem = image_path.stem
        scan, calib = folder / f"{stem}.bin", folder / f"{stem}_calib.pkl"
        for path in (scan, calib):
            if not path.is_file():
                raise DataConfigError(f"{path} not found (needed for {image_path.name})")
        with calib.open("rb") as f:
            calibration = _PlainDataUnpickler(f).load()
        if not isinstance(calibration, dict) or "lidar2img" not in calibration:
            raise DataConfigError(f"{calib}: expected a dict with a lidar2img matrix")
        image = read_png(image_path, rgb=True).astype(np.uint8)
        points = np.fromfile(scan, dtype=np.float32).reshape(-1, 4)
        lidar2img = np.asarray(calibration["lidar2img"], dtype=np.float64)
        depth = project_lidar(points, lidar2img, image.shape[0], image.shape[1])
        frames.append(MeasuredFrame(f"kitti/{stem}", image, depth))
    return frames


def read_measured_frames(root: str | Path) -> list[MeasuredFrame]:
    """Every frame under ``root``'s ``cityscapes_tiny/`` and ``kitti/`` folders.

    Raises:
        DataConfigError: ``root`` holds neither folder, or a frame lacks its measurement.
    """
    root = Path(root)
    readers = {"cityscapes_tiny": read_cityscapes, "kitti": read_kitti}
    found = [name for name in readers if (root / name).is_dir()]
    if not found:
        raise DataConfigError(f"{root}: no cityscapes_tiny/ or kitti/ folder of measured frames")
    frames = [frame for name in found for frame in readers[name](root / name)]
    if not frames:
        raise DataConfigError(f"{root}: no frames found")
    return frames


# The usual range of street depth evaluation (Eigen et al. 2014 on KITTI): truth beyond it
# is left out (stereo disparity there is a pixel or less, mostly noise) and predictions
# are clipped to it after scaling, so one pixel predicted as sky costs a bounded error.
MIN_DEPTH_M, MAX_DEPTH_M = 1e-3, 80.0


def depth_metrics(
    predicted: npt.NDArray[np.floating], measured: npt.NDArray[np.floating], max_depth_m: float = MAX_DEPTH_M
) -> dict[str, float]:
    """Median-scaled depth errors over the pixels measured in ``measured`` (finite, in (0, max_depth_m]).

    ``predicted`` (metres, same shape; non-finite or non-positive values count as
    infinitely far) is scaled by ``median(measured) / median(predicted)`` first, then
    clipped to ``[MIN_DEPTH_M, max_depth_m]``.

    Returns:
        ``abs_rel`` (mean ``|p - t| / t``), ``delta1`` (share of pixels with
        ``max(p/t, t/p) < 1.25``), ``spearman`` (rank correlation of p and t; ``nan``
        when either is constant), ``scale`` and ``pixels``.
    """
    valid = np.isfinite(measured) & (measured > 0) & (measured <= max_depth_m)
    truth = measured[valid].astype(np.float64)
    guess = predicted[valid].astype(np.float64)
    guess = np.where(np.isfinite(guess) & (guess > 0), guess, np.inf)
    if truth.size == 0:
        raise ValueError("no measured pixel to compare with")
    scale = float(np.median(truth) / np.median(guess))
    scaled = np.clip(guess * scale, MIN_DEPTH_M, max_depth_m)
    ratio = np.maximum(scaled / truth, truth / scaled)
    constant = np.ptp(guess[np.isfinite(guess)]) == 0 if np.isfinite(guess).any() else True
    rank = float("nan") if constant else float(spearmanr(scaled, truth).statistic)
    return {
        "abs_rel": float(np.mean(np.abs(scaled - truth) / truth)),
        "delta1": float(np.mean(ratio < 1.25)),
        "spearman": rank,
        "scale": scale,
        "pixels": int(truth.size),
    }


def constant_baseline(measured: npt.NDArray[np.floating]) -> dict[str, float]:
    """`depth_metrics` of a constant depth: after median scaling, the truth's median everywhere."""
    return depth_metrics(np.ones_like(measured, dtype=np.float64), measured)


def summarize(per_frame: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over frames (each frame counts once, whatever its pixel count)."""
    keys = ("abs_rel", "delta1", "spearman")
    means = {}
    for key in keys:
        values = np.array([m[key] for m in per_frame.values()], dtype=np.float64)
        # A constant has no rank correlation on any frame: nan, not a warning.
        means[key] = float(values[~np.isnan(values)].mean()) if (~np.isnan(values)).any() else float("nan")
    return means
