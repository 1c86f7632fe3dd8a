"""What the real-frame datasets (CamVid, Cityscapes) share: a split of frames read from disk.

Each lists its frames once, when built, checking every file, so a broken tree fails
at once rather than hours into training. `RealFrames.read` gives a frame at its own
size in the project's label conventions, which the augmentation scales and crops
from; ``dataset[i]`` is that frame through `resize_sample`, the one resize training
applies to frames (the image with the contract's filter, labels nearest-neighbour,
aspect ratio not kept), as the service resizes an upload.

numpy and Pillow only, so the datasets import without torch, and they hold nothing
but paths and numbers, so they pickle into DataLoader workers.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

from training.data.sample import DataConfigError, SceneSample, check_dataset_size, resize_sample

SPLITS: tuple[str, ...] = ("train", "val", "test")


class Frame(Protocol):
    """The files of one frame, as each dataset lays them out, and the sample's name."""

    @property
    def name(self) -> str: ...


FrameT = TypeVar("FrameT", bound=Frame)


class RealFrames(ABC, Generic[FrameT]):
    """The frames of one split as `SceneSample`s of size ``(height, width)``.

    Raises:
        DataConfigError: naming the field or path, if the split or size is invalid or
            the dataset's `_discover` finds the tree incomplete.
    """

    dataset: ClassVar[str]
    """The dataset's name, for messages."""

    def __init__(
        self, root: str | os.PathLike[str], split: str = "train", height: int = 128, width: int = 256
    ) -> None:
        if split not in SPLITS:
            raise DataConfigError(f"{self.dataset} split {split!r} is not one of {', '.join(SPLITS)}")
        check_dataset_size(height, width)
        self.root = Path(root)
        self.split = split
        self.height = height
        self.width = width
        self._frames = self._discover()

    @abstractmethod
    def _discover(self) -> tuple[FrameT, ...]:
        """Every frame of the split in a stable order, its files checked to exist."""

    @abstractmethod
    def read(self, index: int) -> SceneSample:
        """Frame ``index`` at its own size, in the project's label conventions."""

    @property
    def names(self) -> tuple[str, ...]:
        """Sample names in index order, e.g. ``("val/0016E5_07959", ...)``."""
        return tuple(frame.name for frame in self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> SceneSample:
        """`read` of ``index`` (negative counts from the end) resized to ``(height, width)``."""
        return resize_sample(self.read(index), self.height, self.width)

    def _settings(self) -> dict[str, object]:
        """What ``repr`` shows: the constructor's arguments and the number of frames."""
        return {
            "root": str(self.root),
            "split": self.split,
            "height": self.height,
            "width": self.width,
            "frames": len(self),
        }

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in self._settings().items())
        return f"{type(self).__name__}({settings})"
