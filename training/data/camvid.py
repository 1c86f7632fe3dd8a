"""CamVid (the SegNet 11-class preparation) as a sequence of `SceneSample`s.

Expected layout under ``root``::

    train.txt, val.txt, test.txt   "<image> <label>" paths relative to root, one pair a line
    train/, val/, test/            RGB PNG frames (480x360 in the SegNet preparation)
    trainannot/, valannot/, ...    8-bit label PNGs, one CamVid class index per pixel

CamVid labels semantics only. Its 11 classes map onto the project's class table
(`CAMVID_TO_TRAIN_ID`); void becomes ``IGNORE_INDEX``. Instances are *missing* for
every pixel (``INSTANCE_UNKNOWN``), so these samples give the instance loss no target
at all (see `training.losses`), rather than claiming "no object here". Depth is
missing too (``nan``) unless a `GroundCamera` is given: then it is the geometric
pseudo-depth of the labels (`training.data.pseudo_depth`), measured where the
geometry is sure and ``nan`` elsewhere.

For evaluation in CamVid's own classes, `TRAIN_ID_TO_CAMVID` maps the model's 19
classes back onto CamVid's 11 (the SegNet grouping: trucks and buses count as cars,
walls as buildings, terrain as trees, motorcycles and bicycles as bicyclists).

numpy and Pillow only, so the module imports without torch, and the dataset holds
nothing but paths and numbers, so it pickles into DataLoader workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.data.classes import IGNORE_INDEX, INSTANCE_UNKNOWN, train_id
from training.data.frames import RealFrames
from training.data.pseudo_depth import GroundCamera, pseudo_depth
from training.data.sample import DataConfigError, SceneSample, read_png

CAMVID_CLASSES: tuple[str, ...] = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign/symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
CAMVID_VOID = 11

# CamVid class -> project class.
_TO_PROJECT: dict[str, str] = {
    "sky": "sky",
    "building": "building",
    "pole": "pole",
    "road": "road",
    "pavement": "sidewalk",
    "tree": "vegetation",
    "sign/symbol": "traffic sign",
    "fence": "fence",
    "car": "car",
    "pedestrian": "person",
    "bicyclist": "rider",
}
# Project class -> CamVid class, for scoring predictions in CamVid's classes.
_TO_CAMVID: dict[str, str] = {
    "road": "road",
    "sidewalk": "pavement",
    "building": "building",
    "wall": "building",
    "fence": "fence",
    "pole": "pole",
    "traffic light": "sign/symbol",
    "traffic sign": "sign/symbol",
    "vegetation": "tree",
    "terrain": "tree",
    "sky": "sky",
    "person": "pedestrian",
    "rider": "bicyclist",
    "car": "car",
    "truck": "car",
    "bus": "car",
    "train": "car",
    "motorcycle": "bicyclist",
    "bicycle": "bicyclist",
}


def camvid_to_train_id() -> npt.NDArray[np.uint8]:
    """Lookup ``uint8 [256]`` from CamVid class index to project train id (void and unknown: 255)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for index, name in enumerate(CAMVID_CLASSES):
        table[index] = train_id(_TO_PROJECT[name])
    return table


def train_id_to_camvid() -> npt.NDArray[np.uint8]:
    """Lookup ``uint8 [256]`` from project train id to CamVid class index (``CAMVID_VOID`` if none)."""
    table = np.full(256, CAMVID_VOID, dtype=np.uint8)
    for project_name, camvid_name in _TO_CAMVID.items():
        table[train_id(project_name)] = CAMVID_CLASSES.index(camvid_name)
    return table


@dataclass(frozen=True)
class _Frame:
    name: str
    image: Path
    label: Path


class CamVidScenes(RealFrames[_Frame]):
    """The frames of one CamVid split as `SceneSample`s of size ``(height, width)``.

    ``dataset[i]`` is frame ``i`` (in the order of ``<split>.txt``) resized to
    ``(height, width)`` without keeping the aspect ratio, as the service resizes
    uploads: the image bilinearly, the labels nearest-neighbour. `read` gives the
    frame at its own size, for augmentations that scale and crop, and `camvid_labels`
    the original 11-class labels for scoring at full resolution. With ``pseudo_depth``,
    depth comes from the labels' geometry as that camera sees it (at the frame's own
    size, before any resize).

    Raises:
        DataConfigError: naming the path, if the split or size is invalid, the list
            file or a listed file is missing, or the split is empty.
    """

    dataset = "CamVid"

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        height: int = 128,
        width: int = 256,
        pseudo_depth: GroundCamera | None = None,
    ) -> None:
        self.pseudo_depth = pseudo_depth
        super().__init__(root, split, height, width)

    def _discover(self) -> tuple[_Frame, ...]:
        return _list_frames(self.root, self.split)

    def read(self, index: int) -> SceneSample:
        """Frame ``index`` at its own size, in the project's label conventions."""
        frame = self._frames[index]
        image = read_png(frame.image, rgb=True).astype(np.uint8, copy=False)
        labels = self.camvid_labels(index)
        if labels.shape != image.shape[:2]:
            raise DataConfigError(
                f"{frame.label}: size {labels.shape[1]}x{labels.shape[0]} does not match "
                f"the image's {image.shape[1]}x{image.shape[0]}"
            )
        sample = missing_depth_and_instances(image, camvid_to_train_id()[labels], frame.name)
        if self.pseudo_depth is not None:
            sample.depth = pseudo_depth(sample.semantic, self.pseudo_depth)
        return sample

    def camvid_labels(self, index: int) -> npt.NDArray[np.uint8]:
        """CamVid class indices ``uint8 [H, W]`` of frame ``index`` at full size (11 = void)."""
        frame = self._frames[index]
        labels = read_png(frame.label)
        if labels.ndim != 2:
            raise DataConfigError(f"{frame.label}: expected a single-channel label PNG")
        if labels.size and int(labels.max()) > CAMVID_VOID:
            raise DataConfigError(
                f"{frame.label}: label {int(labels.max())} is not a CamVid class (0..{CAMVID_VOID})"
            )
        return labels.astype(np.uint8)

    def semantic_labels(self, index: int) -> npt.NDArray[np.uint8]:
        """Train ids ``uint8 [H, W]`` of frame ``index`` at full size (void: ``IGNORE_INDEX``)."""
        return camvid_to_train_id()[self.camvid_labels(index)]

    def _settings(self) -> dict[str, object]:
        return super()._settings() | {"pseudo_depth": self.pseudo_depth}


def missing_depth_and_instances(
    image: npt.NDArray[np.uint8], semantic: npt.NDArray[np.uint8], name: str
) -> SceneSample:
    """A sample labelled for semantics only: instances unknown, depth unmeasured everywhere."""
    shape = semantic.shape
    return SceneSample(
        image=image,
        semantic=semantic,
        instance=np.full(shape, INSTANCE_UNKNOWN, dtype=np.int32),
        depth=np.full(shape, np.nan, dtype=np.float32),
        name=name,
    )


def _list_frames(root: Path, split: str) -> tuple[_Frame, ...]:
    if not root.is_dir():
        raise DataConfigError(
            f"CamVid root {root} not found (set data.camvid_root or SCENE_CAMVID_ROOT to the folder "
            "holding train.txt, val.txt and the image folders)"
        )
    listing = root / f"{split}.txt"
    if not listing.is_file():
        raise DataConfigError(f"{listing} not found: the CamVid root must hold one list file per split")
    frames = []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataConfigError(f"{listing}:{number}: expected '<image> <label>', got {line!r}")
        # Some copies of the list carry absolute paths from the machine that wrote them;
        # only the last two components (folder/file) are meaningful here.
        image, label = (root / Path(*Path(p).parts[-2:]) for p in parts)
        for path in (image, label):
            if not path.is_file():
                raise DataConfigError(f"{path} not found (listed in {listing}:{number})")
        frames.append(_Frame(name=f"{split}/{image.stem}", image=image, label=label))
    if not frames:
        raise DataConfigError(f"{listing} lists no frames")
    return tuple(frames)
