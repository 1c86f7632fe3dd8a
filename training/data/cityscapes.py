"""Cityscapes as a sequence of `SceneSample`s, read from the standard on-disk layout.

Expected layout under ``root`` (``<stem>`` is ``<city>_<seq>_<frame>``)::

    leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png     RGB image
    gtFine/<split>/<city>/<stem>_gtFine_labelIds.png      8-bit Cityscapes label ids
    gtFine/<split>/<city>/<stem>_gtFine_instanceIds.png   16-bit instance ids
    disparity/<split>/<city>/<stem>_disparity.png         16-bit stereo disparity (optional)
    camera/<split>/<city>/<stem>_camera.json              calibration (optional)

Many copies hold ``leftImg8bit`` and ``gtFine`` only. Without the ``disparity`` and
``camera`` folders depth is *missing* for every sample (``nan``, no depth target),
not an error; with them, every frame must have both files.

Every frame is converted to the project's label conventions (see
`training.data.classes`) at its own size, and resized as `training.data.frames`
describes. Only numpy, Pillow and json are used, so the module imports without torch;
the dataset holds nothing but paths and numbers, so it pickles into DataLoader workers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.data.classes import (
    INSTANCE_DIVISOR,
    cityscapes_to_train_id,
    is_thing_table,
    train_id,
)
from training.data.frames import RealFrames
from training.data.sample import DataConfigError, SceneSample, read_png

_IMAGE_SUFFIX = "_leftImg8bit.png"
_SKY = train_id("sky")


@dataclass(frozen=True)
class _Frame:
    """Paths of one Cityscapes frame's files and the sample name, e.g. ``"val/<stem>"``."""

    name: str
    image: Path
    label_ids: Path
    instance_ids: Path
    disparity: Path | None
    camera: Path | None


class CityscapesScenes(RealFrames[_Frame]):
    """Cityscapes frames of one split as `SceneSample`s of size ``(height, width)``.

    ``dataset[i]`` is `read` of frame ``i`` resized to ``(height, width)``; frames are
    ordered by their stem (``<city>_<seq>_<frame>``), so indices are stable across runs
    and machines.

    Per sample:

    - ``image``: ``uint8 [height, width, 3]`` RGB, bilinear resize.
    - ``semantic``: ``uint8 [height, width]`` train ids (255 for classes outside the
      table), nearest resize.
    - ``instance``: ``int32 [height, width]``, ``train_id * 1000 + k`` on thing
      classes, 0 elsewhere, nearest resize.
    - ``depth``: ``float32 [height, width]`` metres, ``baseline * fx / disparity`` at
      the frame's own size, nearest resize; ``nan`` where stereo gave no disparity,
      ``inf`` on sky; ``nan`` everywhere when the tree has no ``disparity``/``camera``
      folders.

    Args:
        root: folder holding ``leftImg8bit`` and ``gtFine``, and optionally
            ``disparity`` and ``camera``.
        split: one of ``training.data.frames.SPLITS``.
        height: output height in pixels.
        width: output width in pixels.

    Raises:
        DataConfigError: naming the path or field, if the split or size is invalid,
            a required folder is missing, the split has no images, or a frame lacks
            one of its label files (or, in a tree with depth, its disparity or camera).
    """

    dataset = "Cityscapes"

    def _discover(self) -> tuple[_Frame, ...]:
        return _list_frames(self.root, self.split)

    def read(self, index: int) -> SceneSample:
        """Frame ``index`` at its own size, in the project's label conventions."""
        frame = self._frames[index]
        image = read_png(frame.image, rgb=True).astype(np.uint8, copy=False)
        full_size = image.shape[:2]
        label_ids = _read_map(frame.label_ids, full_size)
        instance_ids = _read_map(frame.instance_ids, full_size)
        semantic = _to_train_ids(label_ids, frame.label_ids)
        instance = _to_instances(instance_ids, semantic)
        if frame.disparity is None or frame.camera is None:
            depth = np.full(full_size, np.nan, dtype=np.float32)
        else:
            disparity_png = _read_map(frame.disparity, full_size)
            baseline_m, fx_px = _read_camera(frame.camera)
            depth = _to_depth(disparity_png, semantic, baseline_m, fx_px)
        return SceneSample(image=image, semantic=semantic, instance=instance, depth=depth, name=frame.name)


def _list_frames(root: Path, split: str) -> tuple[_Frame, ...]:
    """All frames of ``split`` under ``root``, sorted by stem, each with its files checked."""
    if not root.is_dir():
        raise DataConfigError(f"Cityscapes root {root} not found")
    folders = {kind: root / kind / split for kind in ("leftImg8bit", "gtFine", "disparity", "camera")}
    for kind in ("leftImg8bit", "gtFine"):
        if not folders[kind].is_dir():
            raise DataConfigError(f"{folders[kind]} not found")
    with_depth = [folders[kind].is_dir() for kind in ("disparity", "camera")]
    if any(with_depth) and not all(with_depth):
        present, absent = ("disparity", "camera") if with_depth[0] else ("camera", "disparity")
        raise DataConfigError(
            f"{folders[absent]} not found: depth needs both {present}/ and {absent}/ (or neither, "
            "for semantics and instances only)"
        )
    has_depth = all(with_depth)
    images = sorted(folders["leftImg8bit"].glob(f"*/*{_IMAGE_SUFFIX}"), key=lambda path: path.name)
    if not images:
        raise DataConfigError(f"no *{_IMAGE_SUFFIX} under {folders['leftImg8bit']}/<city>/")
    frames = []
    for image in images:
        stem = image.name.removesuffix(_IMAGE_SUFFIX)
        city = image.parent.name
        frame = _Frame(
            name=f"{split}/{stem}",
            image=image,
            label_ids=folders["gtFine"] / city / f"{stem}_gtFine_labelIds.png",
            instance_ids=folders["gtFine"] / city / f"{stem}_gtFine_instanceIds.png",
            disparity=folders["disparity"] / city / f"{stem}_disparity.png" if has_depth else None,
            camera=folders["camera"] / city / f"{stem}_camera.json" if has_depth else None,
        )
        # Checked here so a broken tree fails at construction, not hours into training.
        companions = (frame.label_ids, frame.instance_ids, frame.disparity, frame.camera)
        for companion in companions:
            if companion is not None and not companion.is_file():
                raise DataConfigError(f"{companion} not found (needed for image {image})")
        frames.append(frame)
    return tuple(frames)


def _read_map(path: Path, size: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """A single-channel label or disparity PNG as ``int64 [H, W]``, checked to be ``size``."""
    pixels = read_png(path)
    if pixels.ndim != 2 or not np.issubdtype(pixels.dtype, np.integer):
        raise DataConfigError(f"{path}: expected a single-channel integer PNG")
    if pixels.shape != size:
        raise DataConfigError(
            f"{path}: size {pixels.shape[1]}x{pixels.shape[0]} does not match the image's {size[1]}x{size[0]}"
        )
    return pixels.astype(np.int64)


def _read_camera(path: Path) -> tuple[float, float]:
    """Stereo baseline in metres and focal length ``fx`` in pixels from a camera json."""
    try:
        camera = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataConfigError(f"cannot read camera file {path}: {error}") from None
    values = []
    for section, key in (("extrinsic", "baseline"), ("intrinsic", "fx")):
        try:
            value = float(camera[section][key])
        except (KeyError, TypeError, ValueError):
            raise DataConfigError(f"{path}: missing or non-numeric {section}.{key}") from None
        if not math.isfinite(value) or value <= 0:
            raise DataConfigError(f"{path}: {section}.{key} must be positive, got {value}")
        values.append(value)
    return values[0], values[1]


def _to_train_ids(label_ids: npt.NDArray[np.int64], path: Path) -> npt.NDArray[np.uint8]:
    """Cityscapes label ids ``[H, W]`` to train ids ``uint8 [H, W]`` (255 if unmapped)."""
    if label_ids.min() < 0 or label_ids.max() > 255:
        raise DataConfigError(f"{path}: label ids must lie in 0..255")
    return cityscapes_to_train_id()[label_ids]


def _to_instances(
    instance_ids: npt.NDArray[np.int64], semantic: npt.NDArray[np.uint8]
) -> npt.NDArray[np.int32]:
    """Cityscapes ``label_id * 1000 + k`` ids ``[H, W]`` to ``train_id * 1000 + k``, ``int32``.

    Values below 1000 are stuff or crowd regions without an instance and become 0, as
    do instances of classes that are not things in the class table (caravan, trailer).
    """
    label_ids = np.clip(instance_ids // INSTANCE_DIVISOR, 0, 255)
    train_ids = cityscapes_to_train_id()[label_ids].astype(np.int64)
    keep = (instance_ids >= INSTANCE_DIVISOR) & is_thing_table()[train_ids]
    # An instance must carry its pixel's semantic class; the two PNGs agree in real
    # Cityscapes, and this keeps a hand-edited pair from breaking that invariant.
    keep &= train_ids == semantic
    instance = train_ids * INSTANCE_DIVISOR + instance_ids % INSTANCE_DIVISOR
    return np.where(keep, instance, 0).astype(np.int32)


def _to_depth(
    disparity_png: npt.NDArray[np.int64],
    semantic: npt.NDArray[np.uint8],
    baseline_m: float,
    fx_px: float,
) -> npt.NDArray[np.float32]:
    """Metric depth ``float32 [H, W]`` in metres from 16-bit disparity PNG values ``[H, W]``.

    Metric depth does not change when the frame is resized, so it is computed here at the
    frame's own size, where disparity and ``fx`` are in the same pixels, and resized
    nearest-neighbour like a label.

    Args:
        disparity_png: raw PNG values ``p``; disparity is ``(p - 1) / 256`` pixels,
            ``p == 0`` marks no measurement.
        semantic: train ids ``uint8 [H, W]``; sky pixels get ``inf``.
        baseline_m: stereo baseline in metres.
        fx_px: focal length in pixels.
    """
    disparity_px = (disparity_png.astype(np.float64) - 1.0) / 256.0
    # p == 1 is zero disparity, i.e. a point at infinity that stereo cannot actually
    # resolve; only sky is labelled infinitely far, so treat it as unmeasured too.
    valid = disparity_px > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(valid, baseline_m * fx_px / disparity_px, np.nan)
    depth[semantic == _SKY] = np.inf
    return depth.astype(np.float32)
