"""A tiny CamVid tree in the SegNet layout, written by the tests themselves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CAMVID_HEIGHT, CAMVID_WIDTH = 36, 48
CAMVID_FRAMES = {"train": ("0001TP_000010", "0001TP_000040", "0006R0_000100"), "val": ("0016E5_000200",)}


def camvid_labels(seed: int) -> np.ndarray:
    """Horizontal bands of CamVid classes (sky on top, road below), with void, a car and a pedestrian."""
    labels = np.full((CAMVID_HEIGHT, CAMVID_WIDTH), 3, dtype=np.uint8)  # road
    labels[:8] = 0  # sky
    labels[8:18] = 1  # building
    labels[18:22, :10] = 4  # pavement
    labels[18:22, 10:20] = 5  # tree
    labels[18:22, 20:24] = 2  # pole
    labels[18:22, 24:28] = 6  # sign/symbol
    labels[18:22, 28:34] = 7  # fence
    labels[22:30, 4 + seed : 16 + seed] = 8  # car
    labels[22:32, 30:33] = 9  # pedestrian
    labels[22:30, 38:42] = 10  # bicyclist
    labels[32:, 44:] = 11  # void
    return labels


def write_camvid(root: Path) -> Path:
    """Write the tree: images coloured by class (so a model could learn it), labels, list files."""
    colours = np.random.default_rng(0).integers(0, 256, size=(12, 3), dtype=np.uint8)
    for split, stems in CAMVID_FRAMES.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        lines = []
        for seed, stem in enumerate(stems):
            labels = camvid_labels(seed)
            Image.fromarray(colours[labels]).save(root / split / f"{stem}.png")
            Image.fromarray(labels).save(root / f"{split}annot" / f"{stem}.png")
            # The SegNet tutorial's lists carry absolute paths from its author's machine.
            lines.append(f"/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def camvid_root(tmp_path: Path) -> Path:
    return write_camvid(tmp_path / "camvid")


@pytest.fixture
def camvid_frame_labels() -> Callable[[int], np.ndarray]:
    """The CamVid labels of the fixture's frame ``i`` of its split, at full size."""
    return camvid_labels
