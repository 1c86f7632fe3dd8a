"""Scenes to training batches: targets, flips, and a resumable sampling order."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from training.config import DataConfig
from training.data.augment import ClassPaste, RealFrameAugment, crop_or_pad
from training.data.camvid import CamVidScenes
from training.data.cityscapes import CityscapesScenes
from training.data.disk import DiskScenes
from training.data.frames import RealFrames
from training.data.procedural import ProceduralScenes
from training.data.sample import DataConfigError, SceneSample
from training.model import to_model_input
from training.targets import build_targets


class SceneSource(Protocol):
    """Any dataset of `SceneSample`s: `ProceduralScenes`, `CamVidScenes`, `CityscapesScenes`, `DiskScenes`."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> SceneSample: ...


def build_scenes(config: DataConfig, split: str, source: str | None = None) -> SceneSource:
    """The scenes of ``split`` of ``source`` (default: ``config.source``), at the configured size.

    Procedural: ``train_count`` scenes of "train", ``val_count`` of a held-out split
    ("val", or "test" for `scene-eval`), all from ``seed``.
    """
    source = source or config.source
    height, width = config.height, config.width
    if source == "cityscapes":
        assert config.root is not None
        return CityscapesScenes(config.root, split=split, height=height, width=width)
    if source == "camvid":
        return CamVidScenes(
            config.resolved_camvid_root(),
            split=split,
            height=height,
            width=width,
            pseudo_depth=config.pseudo_depth.camera(),
        )
    if source == "disk":
        assert config.disk_root is not None
        return _disk_scenes(Path(config.disk_root) / split, height, width)
    count = config.train_count if split == "train" else config.val_count
    return ProceduralScenes(split=split, seed=config.seed, count=count, height=height, width=width)


def _disk_scenes(root: Path, height: int, width: int) -> DiskScenes:
    """A `scene-data render` folder, refused unless it was rendered at the training size."""
    scenes = DiskScenes(root)
    size = (scenes.settings.get("height"), scenes.settings.get("width"))
    if size != (height, width):
        raise DataConfigError(
            f"data.disk_root: {root} holds {size[0]}x{size[1]} scenes, the training size is "
            f"{height}x{width}; render them with scene-data render --height {height} --width {width}"
        )
    if len(scenes) == 0:
        raise DataConfigError(f"data.disk_root: {root} holds no scenes")
    return scenes


def samples_per_batch(shares: dict[str, float], batch_size: int) -> dict[str, int]:
    """Split ``batch_size`` by ``shares`` (summing to 1), largest remainder first; each gets >= 1.

    >>> samples_per_batch({"procedural": 0.5, "camvid": 0.5}, 8)
    {'procedural': 4, 'camvid': 4}
    """
    exact = {name: share * batch_size for name, share in shares.items()}
    counts = {name: max(1, int(value)) for name, value in exact.items()}
    by_remainder = sorted(shares, key=lambda name: exact[name] - int(exact[name]), reverse=True)
    for name in by_remainder:
        if sum(counts.values()) >= batch_size:
            break
        counts[name] += 1
    if sum(counts.values()) != batch_size:
        raise ValueError(f"cannot split a batch of {batch_size} into shares {shares}")
    return counts


def flip_sample(sample: SceneSample) -> SceneSample:
    """Mirror a sample left-right; targets built afterwards follow the mirrored instances."""
    return SceneSample(
        image=np.ascontiguousarray(sample.image[:, ::-1]),
        semantic=np.ascontiguousarray(sample.semantic[:, ::-1]),
        instance=np.ascontiguousarray(sample.instance[:, ::-1]),
        depth=np.ascontiguousarray(sample.depth[:, ::-1]),
        name=sample.name + ":flipped",
    )


class TaskDataset(Dataset[dict[str, Tensor]]):
    """Model inputs and targets for a scene source.

    Indexed by ``(scene_index, flip)`` pairs from `StepSampler`, or by plain scene
    indices (no flip) for evaluation. Items: ``image`` ``float32 [3, H, W]`` in [0, 1]
    and the tensors of `training.targets.build_targets`.
    """

    def __init__(self, scenes: SceneSource) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict[str, Tensor]:
        index, flip = key if isinstance(key, tuple) else (key, False)
        sample = self.scenes[index]
        return _task_item(flip_sample(sample) if flip else sample)


def _task_item(sample: SceneSample) -> dict[str, Tensor]:
    item = {name: torch.from_numpy(array) for name, array in build_targets(sample).items()}
    item["image"] = to_model_input(torch.from_numpy(sample.image))
    return item


class StepSampler(Sampler[tuple[int, bool]]):
    """The training order as a pure function of the step, so a resumed run sees the same batches.

    Global sample ``j`` (step ``j // (B * world)``) is scene ``perm_e[j % N]`` of the
    epoch ``e = j // N``, with ``perm_e`` a permutation seeded by (seed, e), and is
    flipped when a hash of (seed, j) says so. Rank ``r`` of ``world`` processes takes
    its own ``B`` samples of each global batch.
    """

    def __init__(
        self,
        num_scenes: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        hflip: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_scenes, self.batch_size, self.seed = num_scenes, batch_size, seed
        self.start_step, self.hflip = start_step, hflip
        self.rank, self.world_size = rank, world_size
        self._epoch, self._perm = -1, np.arange(0)

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        for step in itertools.count(self.start_step):
            for j in self.positions(step):
                yield self.sample(j)

    def positions(self, step: int) -> range:
        """The global sample numbers ``j`` this rank takes at ``step``: its ``B`` of the global batch."""
        first = (step * self.world_size + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def sample(self, j: int) -> tuple[int, bool]:
        """Scene index and flip of global sample ``j``, whatever was drawn before it."""
        epoch = j // self.num_scenes
        if epoch != self._epoch:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(epoch,))))
            self._epoch, self._perm = epoch, rng.permutation(self.num_scenes)
        flip = self.hflip and bool(
            np.random.SeedSequence(self.seed, spawn_key=(j, 1)).generate_state(1)[0] & 1
        )
        return int(self._perm[j % self.num_scenes]), flip

    def __len__(self) -> int:
        raise TypeError("StepSampler is endless; the trainer stops by step count")


class TrainingSource:
    """One source of a training mix: its scenes, samples per batch and augmentation.

    With an ``augment``, samples are read at full size (``scenes.read``), get another
    frame's thin classes pasted in where ``paste`` says so, and go through it; without
    one they are taken as the source yields them (procedural scenes are rendered at the
    training size and drawn fresh each time).
    """

    def __init__(
        self,
        name: str,
        scenes: SceneSource,
        per_batch: int,
        augment: RealFrameAugment | None,
        paste: ClassPaste | None = None,
    ) -> None:
        if augment is not None and not isinstance(scenes, RealFrames):
            raise TypeError(f"source {name}: augmentation needs full-size frames (a read() method)")
        if paste is not None and augment is None:
            raise TypeError(f"source {name}: class paste works on full-size frames; give it an augment")
        self.name, self.scenes, self.per_batch, self.augment = name, scenes, per_batch, augment
        self.paste = paste


def build_training_sources(config: DataConfig, batch_size: int) -> list[TrainingSource]:
    """The configured sources' training splits with their samples per batch."""
    counts = samples_per_batch(config.sources(), batch_size)
    sources = []
    for name, count in counts.items():
        augment, paste = None, None
        # CamVid's frames are few, so they are scaled, cropped and jittered; procedural
        # scenes are new every time, and Cityscapes frames are taken at the training size.
        if name == "camvid":
            low, high = config.scale_range
            augment = RealFrameAugment(
                config.height, config.width, (low, high), config.color_jitter, config.crop_size()
            )
            paste = config.class_paste()
        sources.append(TrainingSource(name, build_scenes(config, "train", name), count, augment, paste))
    return sources


class MixedTaskDataset(Dataset[dict[str, Tensor]]):
    """`TaskDataset` over several sources, indexed by `MixedStepSampler` keys.

    A key is ``(source, scene_index, flip, position)``; ``position`` (the sample's
    place in that source's stream) seeds the augmentation, so a resumed run draws the
    same crops and colours as an uninterrupted one.
    """

    def __init__(self, sources: list[TrainingSource], seed: int, crop: tuple[int, int] | None = None) -> None:
        self.sources, self.seed, self.crop = sources, seed, crop

    def __len__(self) -> int:
        return sum(len(source.scenes) for source in self.sources)

    def __getitem__(self, key: tuple[int, int, bool, int]) -> dict[str, Tensor]:
        source_index, index, flip, position = key
        source = self.sources[source_index]
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(source_index, position, 2)))
        )
        if source.augment is not None:
            assert isinstance(source.scenes, RealFrames)  # TrainingSource refuses an augment otherwise
            sample = source.scenes.read(index)
            # Only a source with a paste draws for it, so other runs keep their random streams.
            donor = source.paste.donor(index, len(source.scenes), rng) if source.paste else None
            if source.paste is not None and donor is not None:
                donor_index, mirrored = donor
                pasted = source.scenes.read(donor_index)
                sample = source.paste(sample, flip_sample(pasted) if mirrored else pasted)
            sample = source.augment(sample, rng)
        else:
            sample = source.scenes[index]
            if self.crop is not None:
                sample = crop_or_pad(sample, *self.crop, rng)
        return _task_item(flip_sample(sample) if flip else sample)


class MixedStepSampler(Sampler[tuple[int, int, bool, int]]):
    """Every batch holds ``per_batch[k]`` samples of source ``k``, each source in its own order.

    Source ``k`` follows a `StepSampler` of its own (its own seed derived from ``seed``
    and ``k``, its own epochs), so the order stays a pure function of the step and a
    resumed run sees the same batches.
    """

    def __init__(
        self,
        sizes: list[int],
        per_batch: list[int],
        seed: int,
        start_step: int = 0,
        hflip: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.start_step = start_step
        self.streams = [
            StepSampler(size, count, _source_seed(seed, k), start_step, hflip, rank, world_size)
            for k, (size, count) in enumerate(zip(sizes, per_batch, strict=True))
        ]

    def __iter__(self) -> Iterator[tuple[int, int, bool, int]]:
        for step in itertools.count(self.start_step):
            for k, stream in enumerate(self.streams):
                for j in stream.positions(step):
                    yield (k, *stream.sample(j), j)

    def __len__(self) -> int:
        raise TypeError("MixedStepSampler is endless; the trainer stops by step count")


def _source_seed(seed: int, source_index: int) -> int:
    # Source 0 keeps the run's seed, so a one-source mix orders its scenes like a plain run.
    if source_index == 0:
        return seed
    return int(np.random.SeedSequence(seed, spawn_key=(source_index,)).generate_state(1)[0])


def batch_to(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Tensor]:
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if channels_last:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved
