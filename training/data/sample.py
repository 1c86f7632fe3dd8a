"""The one sample format every data source in the project yields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from scene_contract.model import BILINEAR
from training.data.classes import IGNORE_INDEX, INSTANCE_DIVISOR, INSTANCE_UNKNOWN, is_thing_table

ArrayT = TypeVar("ArrayT", bound=np.generic)


class DataConfigError(ValueError):
    """A data setting or path is invalid; the message names the field or path."""


@dataclass
class SceneSample:
    """One street image with its dense ground truth.

    Attributes:
        image: ``uint8 [H, W, 3]`` RGB.
        semantic: ``uint8 [H, W]`` train ids, ``IGNORE_INDEX`` where unlabelled.
        instance: ``int32 [H, W]``; 0 = no instance, ``INSTANCE_UNKNOWN`` (-1) = not
            labelled (no instance target), else ``train_id * 1000 + k``.
        depth: ``float32 [H, W]`` metric depth along the camera's optical axis, in
            metres. ``inf`` where the ray meets nothing (sky: inverse depth 0);
            ``nan`` where there is no measurement (only in real data; everywhere in a
            dataset without depth).
        name: a stable identifier, e.g. ``"train/000042"``.
    """

    image: npt.NDArray[np.uint8]
    semantic: npt.NDArray[np.uint8]
    instance: npt.NDArray[np.int32]
    depth: npt.NDArray[np.float32]
    name: str

    @property
    def height(self) -> int:
        return int(self.semantic.shape[0])

    @property
    def width(self) -> int:
        return int(self.semantic.shape[1])

    def inverse_depth(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Inverse depth in 1/m (0 for sky) ``float32 [H, W]`` and its validity mask."""
        valid = ~np.isnan(self.depth)
        with np.errstate(divide="ignore"):
            inverse = np.where(valid, 1.0 / np.where(valid, self.depth, 1.0), 0.0)
        return inverse.astype(np.float32), valid

    def instance_class(self) -> npt.NDArray[np.int32]:
        """Train id encoded in each instance id ``int32 [H, W]`` (-1 where no instance)."""
        return np.where(self.instance > 0, self.instance // INSTANCE_DIVISOR, -1).astype(np.int32)

    def check(self) -> None:
        """Raise ``AssertionError`` if the arrays break the format's invariants."""
        h, w = self.semantic.shape
        assert self.image.shape == (h, w, 3) and self.image.dtype == np.uint8
        assert self.semantic.dtype == np.uint8
        assert self.instance.shape == (h, w) and self.instance.dtype == np.int32
        assert not np.any(self.instance < INSTANCE_UNKNOWN), "negative instance id other than unknown"
        assert self.depth.shape == (h, w) and self.depth.dtype == np.float32
        things = is_thing_table()[self.semantic]
        has_instance = self.instance > 0
        assert not np.any(has_instance & ~things), "instance id on a stuff or ignored pixel"
        labelled = self.semantic != IGNORE_INDEX
        assert np.all(self.instance_class()[has_instance] == self.semantic[has_instance])
        assert not np.any(self.depth[labelled] <= 0), "non-positive depth"


# The filter that brings every image to the training size. The model card records it
# (input.resize) so the service resizes uploads the way training resized its frames.
RESIZE = BILINEAR


def resize_image(image: npt.NDArray[np.uint8], height: int, width: int) -> npt.NDArray[np.uint8]:
    """``uint8 [H, W, 3]`` RGB at ``(height, width)`` with the `RESIZE` filter."""
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), Image.Resampling[RESIZE.upper()])
    return np.array(resized, dtype=np.uint8)


def resize_nearest(values: npt.NDArray[ArrayT], height: int, width: int) -> npt.NDArray[ArrayT]:
    """Nearest-neighbour resize of a label map ``[H, W]`` to ``(height, width)``, sampling pixel centres.

    Done in numpy rather than Pillow so every label, instance and depth dtype takes one
    path and no value is ever blended with a neighbour.
    """
    rows = ((np.arange(height) + 0.5) * (values.shape[0] / height)).astype(np.intp)
    cols = ((np.arange(width) + 0.5) * (values.shape[1] / width)).astype(np.intp)
    return values[np.ix_(rows, cols)]


def resize_sample(sample: SceneSample, height: int, width: int) -> SceneSample:
    """``sample`` at ``(height, width)``: image with `RESIZE`, every label map nearest-neighbour."""
    if sample.height == height and sample.width == width:
        return sample
    return SceneSample(
        image=resize_image(sample.image, height, width),
        semantic=resize_nearest(sample.semantic, height, width),
        instance=resize_nearest(sample.instance, height, width),
        depth=resize_nearest(sample.depth, height, width),
        name=sample.name,
    )


def read_png(path: Path, rgb: bool = False) -> npt.NDArray[np.generic]:
    """Pixels of the image at ``path``: ``uint8 [H, W, 3]`` if ``rgb``, else as stored.

    Label maps are read as stored because converting a palette or 16-bit PNG would
    replace the ids with colours or clip them. `DataConfigError` names an unreadable file.
    """
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB") if rgb else image)
    except (OSError, UnidentifiedImageError) as error:
        raise DataConfigError(f"cannot read image {path}: {error}") from None


def check_dataset_size(height: int, width: int) -> None:
    """`DataConfigError` naming ``height`` or ``width`` unless both are positive integers."""
    for field, size in (("height", height), ("width", width)):
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise DataConfigError(f"{field} must be a positive integer, got {size!r}")
