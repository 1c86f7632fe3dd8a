"""Augmentations for real frames: random scale and crop, and colour jitter.

Procedural scenes are drawn fresh for every sample and need none of this; a few
hundred real frames do. Every label map follows the image geometrically (nearest
neighbour, so no label is blended), and pixels brought in by padding carry no label
for any task. Randomness comes from the ``numpy.random.Generator`` passed in, so the
trainer can make it a pure function of the sample's position in the run (resumable).
numpy and Pillow only: this runs in DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

from training.data.classes import IGNORE_INDEX, INSTANCE_UNKNOWN
from training.data.sample import DataConfigError, SceneSample, resize_sample


@dataclass(frozen=True)
class RealFrameAugment:
    """Scale a full-size frame to ``scale`` times the training size, crop, jitter its colours.

    The training size is ``(height, width)``; scale 1 is the whole frame resized to it
    (aspect ratio not kept, as the service resizes uploads), larger scales zoom in on
    a random window, smaller ones pad the frame out with unlabelled pixels. The output
    is a random ``crop`` of that (default: the whole training size).

    Attributes:
        height, width: training size in pixels.
        scale_range: ``(low, high)``; the scale is drawn uniformly from it.
        color_jitter: brightness, contrast and saturation factors are drawn from
            ``[1 - color_jitter, 1 + color_jitter]``; 0 turns jitter off.
        crop: output ``(height, width)``; ``None``: the training size.
    """

    height: int
    width: int
    scale_range: tuple[float, float] = (0.75, 1.75)
    color_jitter: float = 0.3
    crop: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        low, high = self.scale_range
        if not 0 < low <= high:
            raise DataConfigError(f"scale range must satisfy 0 < low <= high, got {self.scale_range}")
        if not 0 <= self.color_jitter < 1:
            raise DataConfigError(f"color jitter must lie in [0, 1), got {self.color_jitter}")

    def __call__(self, sample: SceneSample, rng: np.random.Generator) -> SceneSample:
        scale = float(rng.uniform(*self.scale_range))
        scaled_h = max(1, round(self.height * scale))
        scaled_w = max(1, round(self.width * scale))
        out_h, out_w = self.crop or (self.height, self.width)
        sample = crop_or_pad(resize_sample(sample, scaled_h, scaled_w), out_h, out_w, rng)
        if self.color_jitter > 0:
            sample.image = jitter_colors(sample.image, rng, self.color_jitter)
        return sample


def crop_or_pad(sample: SceneSample, height: int, width: int, rng: np.random.Generator) -> SceneSample:
    """A random ``(height, width)`` window of ``sample``; sides shorter than that are padded.

    Padding is black in the image, ``IGNORE_INDEX`` in semantics, ``INSTANCE_UNKNOWN``
    in instances and ``nan`` (unmeasured) in depth, so it teaches no task anything.
    """
    out_image = np.zeros((height, width, 3), dtype=np.uint8)
    out_semantic = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
    out_instance = np.full((height, width), INSTANCE_UNKNOWN, dtype=np.int32)
    out_depth = np.full((height, width), np.nan, dtype=np.float32)
    # Per axis: where the window starts in the source, and where the source lands in the output.
    src_y, dst_y, rows = _window(sample.height, height, rng)
    src_x, dst_x, cols = _window(sample.width, width, rng)
    source = (slice(src_y, src_y + rows), slice(src_x, src_x + cols))
    target = (slice(dst_y, dst_y + rows), slice(dst_x, dst_x + cols))
    out_image[target] = sample.image[source]
    out_semantic[target] = sample.semantic[source]
    out_instance[target] = sample.instance[source]
    out_depth[target] = sample.depth[source]
    return SceneSample(out_image, out_semantic, out_instance, out_depth, sample.name)


def _window(size: int, out: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """(source start, output start, length) of a random crop or pad along one axis."""
    if size >= out:
        return int(rng.integers(0, size - out + 1)), 0, out
    return 0, int(rng.integers(0, out - size + 1)), size


def jitter_colors(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in ``[1 - s, 1 + s]``, random order."""
    picture = Image.fromarray(image)
    enhancers = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
    for index in rng.permutation(len(enhancers)):
        factor = float(rng.uniform(1 - strength, 1 + strength))
        picture = enhancers[index](picture).enhance(factor)
    return np.array(picture, dtype=np.uint8)


@dataclass(frozen=True)
class ClassPaste:
    """Copy the pixels of a few thin classes from another frame of the same source.

    A pole seen against sky in one frame is pasted in front of whatever stands at that
    place in another: the thin classes meet backgrounds they were never labelled on
    (poles are most often lost in front of buildings and trees), with no new labels.
    The donor's pixels of ``class_ids`` replace the sample's in the image, the semantic
    labels and the depth (the donor's own, the same camera's); instances stay as they
    were. The donor is mirrored half of the time, so a pole lands on either side.

    Attributes:
        class_ids: train ids whose pixels are pasted.
        probability: share of samples that get a donor's pixels.
    """

    class_ids: tuple[int, ...]
    probability: float = 0.5

    def __post_init__(self) -> None:
        if not self.class_ids:
            raise DataConfigError("class paste needs at least one class")
        if not 0 < self.probability <= 1:
            raise DataConfigError(f"class paste probability must lie in (0, 1], got {self.probability}")

    def donor(self, index: int, count: int, rng: np.random.Generator) -> tuple[int, bool] | None:
        """``(donor index, mirrored)`` for sample ``index`` of ``count``, or ``None`` for no paste."""
        if count < 2 or rng.random() >= self.probability:
            return None
        return (index + 1 + int(rng.integers(count - 1))) % count, bool(rng.random() < 0.5)

    def __call__(self, sample: SceneSample, donor: SceneSample) -> SceneSample:
        if donor.semantic.shape != sample.semantic.shape:
            donor = resize_sample(donor, sample.height, sample.width)
        pasted = np.isin(donor.semantic, self.class_ids)
        image, semantic, depth = sample.image.copy(), sample.semantic.copy(), sample.depth.copy()
        image[pasted] = donor.image[pasted]
        semantic[pasted] = donor.semantic[pasted]
        depth[pasted] = donor.depth[pasted]
        return SceneSample(image, semantic, sample.instance, depth, sample.name)
