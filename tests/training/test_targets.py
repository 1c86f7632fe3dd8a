from __future__ import annotations

import numpy as np
import pytest

from training.data.classes import IGNORE_INDEX, INSTANCE_DIVISOR, train_id
from training.data.sample import SceneSample
from training.targets import build_targets

CAR = train_id("car")
PERSON = train_id("person")
ROAD = train_id("road")


def _two_instance_sample() -> SceneSample:
    """6x8 road scene with a 2x3 car and an L-shaped 3-pixel person."""
    height, width = 6, 8
    semantic = np.full((height, width), ROAD, dtype=np.uint8)
    instance = np.zeros((height, width), dtype=np.int32)
    semantic[1:3, 1:4] = CAR
    instance[1:3, 1:4] = CAR * INSTANCE_DIVISOR
    person_pixels = ([4, 4, 5], [5, 6, 6])
    semantic[person_pixels] = PERSON
    instance[person_pixels] = PERSON * INSTANCE_DIVISOR + 1
    semantic[0, 7] = IGNORE_INDEX
    depth = np.full((height, width), 10.0, dtype=np.float32)
    depth[0, 0] = np.inf
    depth[0, 7] = np.nan
    depth[5, 0] = 2.0
    sample = SceneSample(
        image=np.zeros((height, width, 3), dtype=np.uint8),
        semantic=semantic,
        instance=instance,
        depth=depth,
        name="test/two_instances",
    )
    sample.check()
    return sample


def test_offsets_point_exactly_to_each_instance_centroid() -> None:
    sample = _two_instance_sample()
    targets = build_targets(sample)
    offsets = targets["instance_offsets"]
    # Centroids of the pixel centres (row + 0.5, col + 0.5).
    car_centroid = (1.5 + 0.5, 2.0 + 0.5)
    person_centroid = ((4 + 4 + 5) / 3 + 0.5, (5 + 6 + 6) / 3 + 0.5)
    for instance_id, centroid in (
        (CAR * INSTANCE_DIVISOR, car_centroid),
        (PERSON * INSTANCE_DIVISOR + 1, person_centroid),
    ):
        rows, cols = np.nonzero(sample.instance == instance_id)
        np.testing.assert_allclose(rows + 0.5 + offsets[0, rows, cols], centroid[0], atol=1e-6)
        np.testing.assert_allclose(cols + 0.5 + offsets[1, rows, cols], centroid[1], atol=1e-6)
    # Top-left car pixel (1, 1) to centroid (1.5, 2.0) in index coordinates.
    np.testing.assert_allclose(offsets[:, 1, 1], [0.5, 1.0])


def test_offsets_are_zero_and_mask_false_outside_instances() -> None:
    sample = _two_instance_sample()
    targets = build_targets(sample)
    mask = targets["instance_mask"]
    np.testing.assert_array_equal(mask, sample.instance > 0)
    assert mask.sum() == 6 + 3
    assert np.all(targets["instance_offsets"][:, ~mask] == 0)


def test_image_without_instances_has_zero_offsets() -> None:
    sample = _two_instance_sample()
    sample.instance[:] = 0
    targets = build_targets(sample)
    assert not targets["instance_mask"].any()
    assert np.all(targets["instance_offsets"] == 0)


def test_semantic_keeps_train_ids_and_ignore_index() -> None:
    sample = _two_instance_sample()
    semantic = build_targets(sample)["semantic"]
    assert semantic.dtype == np.int64
    np.testing.assert_array_equal(semantic, sample.semantic)
    assert semantic[0, 7] == IGNORE_INDEX


def test_inverse_depth_sky_is_zero_and_missing_depth_is_masked() -> None:
    targets = build_targets(_two_instance_sample())
    inverse_depth, depth_mask = targets["inverse_depth"], targets["depth_mask"]
    assert inverse_depth.shape == (1, 6, 8) and depth_mask.shape == (1, 6, 8)
    assert inverse_depth[0, 5, 0] == pytest.approx(0.5)
    assert inverse_depth[0, 0, 0] == 0.0 and depth_mask[0, 0, 0]  # sky: valid, 1/inf
    assert not depth_mask[0, 0, 7]  # no measurement
    assert np.all(np.isfinite(inverse_depth))
    assert depth_mask.sum() == 6 * 8 - 1


def test_dtypes_and_shapes_match_the_losses() -> None:
    targets = build_targets(_two_instance_sample())
    expected = {
        "semantic": (np.int64, (6, 8)),
        "instance_offsets": (np.float32, (2, 6, 8)),
        "instance_mask": (np.bool_, (6, 8)),
        "inverse_depth": (np.float32, (1, 6, 8)),
        "depth_mask": (np.bool_, (1, 6, 8)),
    }
    assert {k: (v.dtype.type, v.shape) for k, v in targets.items()} == expected


def test_offsets_match_a_per_instance_reference_on_a_random_map() -> None:
    rng = np.random.default_rng(0)
    ids = np.array([0, CAR * INSTANCE_DIVISOR, CAR * INSTANCE_DIVISOR + 1, PERSON * INSTANCE_DIVISOR + 7])
    instance = ids[rng.integers(0, len(ids), size=(16, 24))].astype(np.int32)
    semantic = np.where(instance > 0, instance // INSTANCE_DIVISOR, ROAD).astype(np.uint8)
    depth = np.ones((16, 24), dtype=np.float32)
    sample = SceneSample(np.zeros((16, 24, 3), np.uint8), semantic, instance, depth, "test/random")
    offsets = build_targets(sample)["instance_offsets"]
    for instance_id in ids[1:]:
        rows, cols = np.nonzero(instance == instance_id)
        np.testing.assert_allclose(offsets[0, rows, cols], rows.mean() - rows, atol=1e-5)
        np.testing.assert_allclose(offsets[1, rows, cols], cols.mean() - cols, atol=1e-5)
