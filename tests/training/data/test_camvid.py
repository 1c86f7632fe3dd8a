"""CamVidScenes and the real-frame augmentation on a CamVid tree the tests write."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.augment import RealFrameAugment, crop_or_pad
from training.data.camvid import CAMVID_CLASSES, CamVidScenes, camvid_to_train_id, train_id_to_camvid
from training.data.classes import IGNORE_INDEX, INSTANCE_UNKNOWN, train_id
from training.data.sample import DataConfigError
from training.targets import build_targets

# The fixture's frame size (tests/conftest.py).
CAMVID_HEIGHT, CAMVID_WIDTH = 36, 48
Labels = Callable[[int], np.ndarray]


def test_classes_map_onto_the_project_table_as_documented(
    camvid_root: Path, camvid_frame_labels: Labels
) -> None:
    sample = CamVidScenes(camvid_root, "train", height=CAMVID_HEIGHT, width=CAMVID_WIDTH)[0]
    sample.check()
    labels = camvid_frame_labels(0)
    expected = {
        0: "sky",
        1: "building",
        2: "pole",
        3: "road",
        4: "sidewalk",
        5: "vegetation",
        6: "traffic sign",
        7: "fence",
        8: "car",
        9: "person",
        10: "rider",
    }
    for camvid_index, name in expected.items():
        assert (sample.semantic[labels == camvid_index] == train_id(name)).all(), name
    assert (sample.semantic[labels == 11] == IGNORE_INDEX).all()


def test_instances_and_depth_are_missing_not_zero_or_sky(camvid_root: Path) -> None:
    sample = CamVidScenes(camvid_root, "train", height=CAMVID_HEIGHT, width=CAMVID_WIDTH)[0]
    assert (sample.instance == INSTANCE_UNKNOWN).all()
    assert np.isnan(sample.depth).all()
    targets = build_targets(sample)
    # No pixel is a target for the instance or depth head, not even "no instance" or "sky".
    assert not targets["instance_mask"].any()
    assert not targets["depth_mask"].any()
    assert (targets["semantic"] != IGNORE_INDEX).any()


def test_frames_resize_to_the_training_size_and_read_keeps_full_size(
    camvid_root: Path, camvid_frame_labels: Labels
) -> None:
    scenes = CamVidScenes(camvid_root, "train", height=16, width=32)
    assert len(scenes) == 3
    assert scenes.names[0] == "train/0001TP_000010"
    assert scenes[1].image.shape == (16, 32, 3) and scenes[1].semantic.shape == (16, 32)
    full = scenes.read(1)
    assert full.image.shape == (CAMVID_HEIGHT, CAMVID_WIDTH, 3)
    # Nearest-neighbour: every resized label is one of the frame's own, none blended.
    assert set(np.unique(scenes[1].semantic)) <= set(np.unique(full.semantic))
    np.testing.assert_array_equal(scenes.camvid_labels(1), camvid_frame_labels(1))
    assert len(pickle.loads(pickle.dumps(scenes))) == 3  # goes into DataLoader workers


def test_mapping_back_to_camvid_is_the_inverse_on_camvid_classes() -> None:
    forward, back = camvid_to_train_id(), train_id_to_camvid()
    for index in range(len(CAMVID_CLASSES)):
        assert back[forward[index]] == index
    # Classes CamVid groups with others (its 11-class convention).
    assert CAMVID_CLASSES[back[train_id("truck")]] == "car"
    assert CAMVID_CLASSES[back[train_id("traffic light")]] == "sign/symbol"
    assert CAMVID_CLASSES[back[train_id("bicycle")]] == "bicyclist"


def test_missing_root_says_which_setting_to_use(tmp_path: Path) -> None:
    with pytest.raises(DataConfigError, match=r"not found.*data.camvid_root or SCENE_CAMVID_ROOT"):
        CamVidScenes(tmp_path / "nowhere")


def test_missing_list_or_listed_file_is_named(camvid_root: Path) -> None:
    with pytest.raises(DataConfigError, match=re.escape(f"{camvid_root / 'test.txt'} not found")):
        CamVidScenes(camvid_root, "test")
    missing = camvid_root / "trainannot" / "0001TP_000040.png"
    missing.unlink()
    with pytest.raises(DataConfigError, match=re.escape(f"{missing} not found (listed in")):
        CamVidScenes(camvid_root, "train")


def test_label_outside_camvid_classes_is_named(camvid_root: Path) -> None:
    path = camvid_root / "valannot" / "0016E5_000200.png"
    Image.fromarray(np.full((CAMVID_HEIGHT, CAMVID_WIDTH), 40, np.uint8)).save(path)
    with pytest.raises(DataConfigError, match=r"label 40 is not a CamVid class"):
        CamVidScenes(camvid_root, "val")[0]


def test_augmentation_moves_every_label_with_the_image(camvid_root: Path) -> None:
    full = CamVidScenes(camvid_root, "train").read(0)
    # An image that encodes its own labels: any geometric mismatch would show.
    spread = np.where(full.semantic == IGNORE_INDEX, 0, full.semantic.astype(np.uint16) * 16).astype(np.uint8)
    full.image = np.repeat(spread[..., None], 3, axis=2)
    # Zooming in (scale >= 1 of a frame larger than the output) keeps blending to one pixel.
    augment = RealFrameAugment(24, 32, scale_range=(1.0, 2.0), color_jitter=0.0)
    for seed in range(8):
        out = augment(full, np.random.default_rng(seed))
        out.check()
        # Away from class borders (where bilinear resizing blends the image), the image
        # still spells out the label under it.
        labels = out.semantic.astype(int)
        inner = np.ones_like(labels, dtype=bool)
        inner[1:-1, 1:-1] = (
            (labels[1:-1, 1:-1] == labels[:-2, 1:-1])
            & (labels[1:-1, 1:-1] == labels[2:, 1:-1])
            & (labels[1:-1, 1:-1] == labels[1:-1, :-2])
            & (labels[1:-1, 1:-1] == labels[1:-1, 2:])
        )
        inner[[0, -1]] = inner[:, [0, -1]] = False
        inner &= labels != IGNORE_INDEX
        assert inner.sum() > 100
        decoded = np.round(out.image[..., 0][inner] / 16)
        # Bilinear and nearest sampling may still disagree on a stray pixel of a thin
        # structure; a misplaced crop or a missed flip would disagree on whole bands.
        assert (decoded == out.semantic[inner]).mean() > 0.98


def test_padding_carries_no_label_for_any_task() -> None:
    from training.data.sample import SceneSample

    small = SceneSample(
        image=np.full((4, 6, 3), 200, np.uint8),
        semantic=np.zeros((4, 6), np.uint8),
        instance=np.zeros((4, 6), np.int32),
        depth=np.full((4, 6), 5.0, np.float32),
        name="small",
    )
    out = crop_or_pad(small, 8, 10, np.random.default_rng(1))
    padded = out.image[..., 0] == 0
    assert padded.sum() == 8 * 10 - 4 * 6
    assert (out.semantic[padded] == IGNORE_INDEX).all()
    assert (out.instance[padded] == INSTANCE_UNKNOWN).all()
    assert np.isnan(out.depth[padded]).all()
    assert (out.depth[~padded] == 5.0).all()


def test_augmentation_is_a_function_of_its_generator(camvid_root: Path) -> None:
    full = CamVidScenes(camvid_root, "train").read(2)
    augment = RealFrameAugment(24, 32)
    first, again = (augment(full, np.random.default_rng(7)) for _ in range(2))
    np.testing.assert_array_equal(first.image, again.image)
    other = augment(full, np.random.default_rng(8))
    assert not np.array_equal(first.image, other.image)


@pytest.mark.parametrize(("scale_range", "jitter"), [((0.0, 1.0), 0.1), ((2.0, 1.0), 0.1), ((1.0, 1.0), 1.5)])
def test_bad_augmentation_settings_are_refused(scale_range: tuple[float, float], jitter: float) -> None:
    with pytest.raises(DataConfigError):
        RealFrameAugment(8, 8, scale_range, jitter)
