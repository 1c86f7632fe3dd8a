"""Procedural street scenes as a dataset: seeded, split-aware, rendered on demand."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.data.render import render
from training.data.sample import DataConfigError, SceneSample
from training.data.scene import Scene, SceneConfig, sample_scene

SPLITS: tuple[str, ...] = ("train", "val", "test")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataConfigError(f"split: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise DataConfigError(f"{name}: must be a positive integer, got {value!r}")


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for scene ``index`` of ``split``.

    Each (seed, split, index) is its own `SeedSequence` spawn key, so splits draw
    from independent streams and never share a scene, and any scene can be made
    without making the ones before it.
    """
    check_split(split)
    if index < 0:
        raise DataConfigError(f"index: must be >= 0, got {index}")
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(SPLITS.index(split), index))
    return np.random.Generator(np.random.PCG64(sequence))


@dataclass(frozen=True)
class ProceduralScenes:
    """``count`` procedural scenes of one split, rendered on each access.

    Holds only settings, so it pickles cheaply into DataLoader worker processes,
    and scene ``i`` is the same in every worker, run and machine.
    """

    split: str = "train"
    seed: int = 0
    count: int = 1000
    height: int = 128
    width: int = 256
    config: SceneConfig = field(default_factory=SceneConfig)

    def __post_init__(self) -> None:
        check_split(self.split)
        check_size(self.height, self.width)
        if self.count < 0:
            raise DataConfigError(f"count: must be >= 0, got {self.count}")
        if self.seed < 0:
            raise DataConfigError(f"seed: must be >= 0, got {self.seed}")

    def __len__(self) -> int:
        return self.count

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.count:
            raise IndexError(f"scene index {index} out of range for {self.count} scenes")
        return sample_scene(scene_rng(self.seed, self.split, index), self.config)

    def __getitem__(self, index: int) -> SceneSample:
        sample = render(self.scene(index), self.height, self.width)
        sample.name = f"{self.split}/{index:06d}"
        return sample
