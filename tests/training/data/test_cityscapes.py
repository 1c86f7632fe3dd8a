"""CityscapesScenes on a tiny fabricated tree in the real Cityscapes layout."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from training.data.cityscapes import CityscapesScenes
from training.data.classes import IGNORE_INDEX, train_id
from training.data.sample import DataConfigError, resize_sample
from training.targets import build_targets

HEIGHT, WIDTH = 64, 128
BASELINE_M, FX_PX = 0.2, 2262.52
CITY = "testcity"
# Created out of order so the test shows the dataset sorts them.
STEMS = ("testcity_000001_000000", "testcity_000000_000019")

SKY_TOP = (200, 10, 30)
GROUND_BOTTOM = (5, 100, 250)


def _png(value: int) -> int:
    """16-bit disparity PNG value for a disparity of ``value`` pixels."""
    return value * 256 + 1


def _depth(disparity_px: float) -> float:
    return BASELINE_M * FX_PX / disparity_px


def _fabricate_frame() -> dict[str, npt.NDArray[np.generic]]:
    """One 64x128 frame; every region boundary is even so a 0.5 resize keeps it exact.

    rows  0-15  sky (23), disparity 3000 (must be ignored: sky is inf)
    rows 16-31  building (11): cols 0-31 no disparity, cols 32-95 d=10, cols 96-127 p=1
    rows 32-63  road (7), d=1, with
                car 26001 (rows 40-55, cols 16-47), d=50
                person 24000 (rows 40-55, cols 64-79), d=20
                caravan 29002 (rows 40-47, cols 96-111): no train id
                car group without instance id 26 (rows 48-55, cols 96-111)
                static (4) (rows 56-63, cols 96-127): no train id
    """
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    instances = np.zeros((HEIGHT, WIDTH), np.uint16)
    disparity = np.zeros((HEIGHT, WIDTH), np.uint16)
    labels[0:16] = 23
    disparity[0:16] = 3000
    labels[16:32] = 11
    disparity[16:32, 32:96] = _png(10)
    disparity[16:32, 96:] = 1
    labels[32:] = 7
    disparity[32:] = _png(1)
    labels[40:56, 16:48] = 26
    instances[40:56, 16:48] = 26001
    disparity[40:56, 16:48] = _png(50)
    labels[40:56, 64:80] = 24
    instances[40:56, 64:80] = 24000
    disparity[40:56, 64:80] = _png(20)
    labels[40:48, 96:112] = 29
    instances[40:48, 96:112] = 29002
    labels[48:56, 96:112] = 26
    labels[56:64, 96:128] = 4
    # Cityscapes stores the label id itself where a pixel has no instance.
    no_instance = instances == 0
    instances[no_instance] = labels[no_instance]
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:32] = SKY_TOP
    image[32:] = GROUND_BOTTOM
    return {"image": image, "labels": labels, "instances": instances, "disparity": disparity}


def _write_tree(root: Path, split: str = "val") -> None:
    frame = _fabricate_frame()
    camera = {
        "extrinsic": {"baseline": BASELINE_M, "pitch": 0.05, "roll": 0.0, "yaw": 0.007},
        "intrinsic": {"fx": FX_PX, "fy": 2250.72, "u0": 1096.98, "v0": 513.137},
    }
    for stem in STEMS:
        files = {
            root / "leftImg8bit" / split / CITY / f"{stem}_leftImg8bit.png": frame["image"],
            root / "gtFine" / split / CITY / f"{stem}_gtFine_labelIds.png": frame["labels"],
            root / "gtFine" / split / CITY / f"{stem}_gtFine_instanceIds.png": frame["instances"],
            root / "disparity" / split / CITY / f"{stem}_disparity.png": frame["disparity"],
        }
        for path, pixels in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
        camera_path = root / "camera" / split / CITY / f"{stem}_camera.json"
        camera_path.parent.mkdir(parents=True, exist_ok=True)
        camera_path.write_text(json.dumps(camera))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _write_tree(tmp_path / "cityscapes")
    return tmp_path / "cityscapes"


def test_frames_are_found_sorted_and_named(root: Path) -> None:
    scenes = CityscapesScenes(root, split="val")
    assert len(scenes) == 2
    assert scenes.names == ("val/testcity_000000_000019", "val/testcity_000001_000000")
    assert [scenes[i].name for i in range(len(scenes))] == list(scenes.names)
    assert scenes[-1].name == scenes.names[-1]
    with pytest.raises(IndexError):
        scenes[2]


@pytest.mark.parametrize(("height", "width"), [(64, 128), (32, 64), (48, 96), (128, 256)])
def test_sample_has_requested_size_and_valid_format(root: Path, height: int, width: int) -> None:
    sample = CityscapesScenes(root, split="val", height=height, width=width)[0]
    sample.check()
    assert sample.image.shape == (height, width, 3)
    assert (sample.height, sample.width) == (height, width)


def test_image_is_rgb(root: Path) -> None:
    sample = CityscapesScenes(root, split="val", height=32, width=64)[0]
    assert tuple(sample.image[4, 30]) == SKY_TOP
    assert tuple(sample.image[28, 30]) == GROUND_BOTTOM


@pytest.mark.parametrize("scale", [1, 2])
def test_label_ids_become_train_ids(root: Path, scale: int) -> None:
    sample = CityscapesScenes(root, split="val", height=HEIGHT // scale, width=WIDTH // scale)[0]
    expected = {
        (0, 0): train_id("sky"),
        (20, 40): train_id("building"),
        (60, 0): train_id("road"),
        (44, 20): train_id("car"),
        (44, 70): train_id("person"),
        (44, 100): IGNORE_INDEX,  # caravan
        (60, 100): IGNORE_INDEX,  # static
    }
    for (row, col), train in expected.items():
        assert sample.semantic[row // scale, col // scale] == train, (row, col)


@pytest.mark.parametrize("scale", [1, 2])
def test_instance_ids_use_train_ids_and_are_zero_on_stuff(root: Path, scale: int) -> None:
    sample = CityscapesScenes(root, split="val", height=HEIGHT // scale, width=WIDTH // scale)[0]
    instance = sample.instance
    assert instance.dtype == np.int32
    assert instance[44 // scale, 20 // scale] == train_id("car") * 1000 + 1
    assert instance[44 // scale, 70 // scale] == train_id("person") * 1000 + 0
    assert instance[60 // scale, 0] == 0  # road
    assert instance[0, 0] == 0  # sky
    assert instance[44 // scale, 100 // scale] == 0  # caravan: a thing with no train id
    assert instance[52 // scale, 100 // scale] == 0  # car group without an instance
    assert set(np.unique(instance)) == {0, 13001, 11000}


@pytest.mark.parametrize(("height", "width"), [(64, 128), (32, 64), (48, 96), (128, 256)])
def test_depth_is_metric_at_any_resolution(root: Path, height: int, width: int) -> None:
    # Depth is in metres, computed at the frame's own size: a resize must not change it.
    sample = CityscapesScenes(root, split="val", height=height, width=width)[0]
    car = sample.instance == 13001
    person = sample.instance == 11000
    road = sample.semantic == train_id("road")
    assert car.any()
    assert person.any()
    assert road.any()
    np.testing.assert_allclose(sample.depth[car], _depth(50), rtol=1e-5)
    np.testing.assert_allclose(sample.depth[person], _depth(20), rtol=1e-5)
    np.testing.assert_allclose(sample.depth[road], _depth(1), rtol=1e-5)
    assert sample.depth.dtype == np.float32


def test_depth_at_a_pixel_survives_halving_the_resolution(root: Path) -> None:
    full = CityscapesScenes(root, split="val", height=HEIGHT, width=WIDTH)[0]
    half = CityscapesScenes(root, split="val", height=HEIGHT // 2, width=WIDTH // 2)[0]
    for row, col in [(20, 40), (44, 20), (44, 70), (60, 0)]:
        assert half.depth[row // 2, col // 2] == pytest.approx(full.depth[row, col], rel=1e-6)
    assert full.depth[44, 20] == pytest.approx(9.05008, rel=1e-5)
    assert full.depth[20, 40] == pytest.approx(45.2504, rel=1e-5)


@pytest.mark.parametrize("scale", [1, 2])
def test_missing_disparity_is_nan_and_sky_is_inf(root: Path, scale: int) -> None:
    depth = CityscapesScenes(root, split="val", height=HEIGHT // scale, width=WIDTH // scale)[0].depth
    assert np.isnan(depth[16 // scale : 32 // scale, : 32 // scale]).all()  # p == 0
    assert np.isnan(depth[16 // scale : 32 // scale, 96 // scale :]).all()  # zero disparity
    # Sky has a disparity in the file, yet is infinitely far (inverse depth 0).
    assert np.isposinf(depth[: 16 // scale]).all()
    assert np.isfinite(depth[32 // scale :]).all()


def test_survives_pickling(root: Path) -> None:
    scenes = CityscapesScenes(root, split="val", height=32, width=64)
    restored = pickle.loads(pickle.dumps(scenes))
    assert restored.names == scenes.names
    before, after = scenes[1], restored[1]
    for field in ("image", "semantic", "instance", "depth"):
        np.testing.assert_array_equal(getattr(after, field), getattr(before, field))


def test_read_gives_the_frame_at_its_own_size_and_items_are_its_resize(root: Path) -> None:
    # The full-size frame is what an augmentation scales and crops from; the item at the
    # training size must be that same frame, resized once.
    scenes = CityscapesScenes(root, split="val", height=24, width=40)
    full = scenes.read(0)
    full.check()
    assert full.image.shape == (HEIGHT, WIDTH, 3)
    assert full.depth[44, 20] == pytest.approx(_depth(50), rel=1e-5)
    expected, item = resize_sample(full, 24, 40), scenes[0]
    for field in ("image", "semantic", "instance", "depth"):
        np.testing.assert_array_equal(getattr(item, field), getattr(expected, field))


def test_missing_root_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataConfigError, match=re.escape(str(missing))):
        CityscapesScenes(missing, split="val")


@pytest.mark.parametrize("folder", ["leftImg8bit", "gtFine"])
def test_missing_folder_is_named(root: Path, folder: str) -> None:
    shutil.rmtree(root / folder / "val")
    with pytest.raises(DataConfigError, match=re.escape(f"{root / folder / 'val'} not found")):
        CityscapesScenes(root, split="val")


def test_gtfine_only_tree_has_missing_depth_and_full_labels(root: Path) -> None:
    full = CityscapesScenes(root, split="val")[0]
    shutil.rmtree(root / "disparity")
    shutil.rmtree(root / "camera")
    sample = CityscapesScenes(root, split="val")[0]
    sample.check()
    assert np.isnan(sample.depth).all()  # missing: not 0, not sky's inf
    np.testing.assert_array_equal(sample.semantic, full.semantic)
    np.testing.assert_array_equal(sample.instance, full.instance)
    targets = build_targets(sample)
    assert not targets["depth_mask"].any()
    assert targets["instance_mask"].any()


@pytest.mark.parametrize(("present", "absent"), [("disparity", "camera"), ("camera", "disparity")])
def test_half_a_depth_tree_is_named(root: Path, present: str, absent: str) -> None:
    shutil.rmtree(root / absent)
    with pytest.raises(
        DataConfigError, match=re.escape(f"{root / absent / 'val'} not found: depth needs both")
    ):
        CityscapesScenes(root, split="val")


def test_split_absent_on_disk_is_named(root: Path) -> None:
    with pytest.raises(DataConfigError, match=re.escape(str(root / "leftImg8bit" / "train"))):
        CityscapesScenes(root, split="train")


def test_split_without_images_is_reported(root: Path) -> None:
    for image in (root / "leftImg8bit" / "val").rglob("*.png"):
        image.unlink()
    with pytest.raises(DataConfigError, match=r"no \*_leftImg8bit\.png under .*leftImg8bit"):
        CityscapesScenes(root, split="val")


def test_unknown_split_lists_valid_ones(root: Path) -> None:
    with pytest.raises(DataConfigError, match=r"'validation'.*train, val, test"):
        CityscapesScenes(root, split="validation")


@pytest.mark.parametrize(("height", "width", "field"), [(0, 256, "height"), (128, -1, "width")])
def test_non_positive_size_is_named(root: Path, height: int, width: int, field: str) -> None:
    with pytest.raises(DataConfigError, match=field):
        CityscapesScenes(root, split="val", height=height, width=width)


@pytest.mark.parametrize(
    ("folder", "suffix"),
    [
        ("gtFine", "_gtFine_labelIds.png"),
        ("gtFine", "_gtFine_instanceIds.png"),
        ("disparity", "_disparity.png"),
        ("camera", "_camera.json"),
    ],
)
def test_missing_companion_file_is_named(root: Path, folder: str, suffix: str) -> None:
    missing = root / folder / "val" / CITY / f"{STEMS[0]}{suffix}"
    missing.unlink()
    with pytest.raises(DataConfigError, match=re.escape(f"{missing} not found")):
        CityscapesScenes(root, split="val")


def test_camera_without_baseline_is_named(root: Path) -> None:
    camera = root / "camera" / "val" / CITY / f"{STEMS[1]}_camera.json"
    camera.write_text(json.dumps({"extrinsic": {}, "intrinsic": {"fx": FX_PX}}))
    scenes = CityscapesScenes(root, split="val")
    with pytest.raises(
        DataConfigError, match=re.escape(f"{camera}: missing or non-numeric extrinsic.baseline")
    ):
        scenes[0]


def test_label_map_of_wrong_size_is_named(root: Path) -> None:
    labels = root / "gtFine" / "val" / CITY / f"{STEMS[1]}_gtFine_labelIds.png"
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(labels)
    with pytest.raises(DataConfigError, match=re.escape(f"{labels}: size 64x32")):
        CityscapesScenes(root, split="val")[0]
