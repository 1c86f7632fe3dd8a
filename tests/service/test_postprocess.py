"""Instance grouping: offsets that point at centroids become the right instances."""

from __future__ import annotations

import re
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from service.instances import GroupedInstances
from service.postprocess import group_instances
from training.data.classes import INSTANCE_DIVISOR, THING_TRAIN_IDS, train_id
from training.data.procedural import ProceduralScenes
from training.data.sample import SceneSample
from training.targets import build_targets, instance_offsets

ROAD, PERSON, CAR = train_id("road"), train_id("person"), train_id("car")
HEIGHT, WIDTH = 128, 256
# Settings for exact offsets: no vote spread to smooth away, so the finest peaks work.
SHARP = {"smoothing_sigma": 0.5, "nms_radius": 1, "min_votes": 1, "min_pixels": 1}

Box = tuple[int, int, int, int, int]  # class, y0, y1, x0, x1 (exclusive ends)


def boxes_scene(*boxes: Box) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    """Semantic and instance maps of rectangles on road; later boxes hide earlier ones."""
    semantic = np.full((HEIGHT, WIDTH), ROAD, dtype=np.uint8)
    instance = np.zeros((HEIGHT, WIDTH), dtype=np.int32)
    for k, (class_id, y0, y1, x0, x1) in enumerate(boxes):
        semantic[y0:y1, x0:x1] = class_id
        instance[y0:y1, x0:x1] = class_id * INSTANCE_DIVISOR + k
    return semantic, instance


def group(
    semantic: npt.NDArray[np.uint8], offsets: npt.NDArray[np.float32], **options: Any
) -> GroupedInstances:
    return group_instances(semantic, offsets, THING_TRAIN_IDS, **options)


def same_partition(truth: npt.NDArray[np.integer], found: npt.NDArray[np.integer]) -> bool:
    """True if ``found`` has exactly the instances of ``truth`` (ids may differ)."""
    pairs = np.unique(np.stack([truth.ravel().astype(np.int64), found.ravel().astype(np.int64)]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def matched(truth: npt.NDArray[np.integer], found: npt.NDArray[np.integer]) -> tuple[int, int, int]:
    """(true instances, found instances, true instances matched by one found at IoU >= 0.5)."""
    true_ids, true_index = np.unique(truth, return_inverse=True)
    found_ids, found_index = np.unique(found, return_inverse=True)
    n_true, n_found = len(true_ids), len(found_ids)
    overlap = np.bincount(true_index.ravel() * n_found + found_index.ravel(), minlength=n_true * n_found)
    intersection = overlap.reshape(n_true, n_found).astype(np.float64)
    union = intersection.sum(1, keepdims=True) + intersection.sum(0, keepdims=True) - intersection
    iou = (intersection / union)[true_ids != 0][:, found_ids != 0]
    return iou.shape[0], iou.shape[1], int((iou >= 0.5).any(axis=1).sum())


@pytest.fixture(scope="module")
def rendered() -> list[tuple[SceneSample, npt.NDArray[np.float32]]]:
    """20 rendered validation scenes (68 instances) with their exact offsets."""
    scenes = ProceduralScenes(split="val", seed=0, count=20, height=HEIGHT, width=WIDTH)
    return [(sample, build_targets(sample)["instance_offsets"]) for sample in (scenes[i] for i in range(20))]


def nearest_same_class_centroids(instance: npt.NDArray[np.int32]) -> float:
    """Smallest distance in pixels between the centroids of two instances of one class."""
    centroids = []
    for instance_id in np.unique(instance[instance > 0]):
        rows, cols = np.nonzero(instance == instance_id)
        centroids.append((instance_id // INSTANCE_DIVISOR, rows.mean(), cols.mean()))
    return min(
        (
            float(np.hypot(a[1] - b[1], a[2] - b[2]))
            for i, a in enumerate(centroids)
            for b in centroids[i + 1 :]
            if a[0] == b[0]
        ),
        default=np.inf,
    )


def test_rendered_scenes_with_exact_offsets_are_recovered_exactly(
    rendered: list[tuple[SceneSample, npt.NDArray[np.float32]]],
) -> None:
    # Votes of instances whose centroids are closer than this merge into one peak.
    separable = [(s, o) for s, o in rendered if nearest_same_class_centroids(s.instance) >= 3.0]
    assert len(separable) >= 15 and sum(len(np.unique(s.instance)) - 1 for s, _ in separable) >= 30
    for sample, offsets in separable:
        result = group(sample.semantic, offsets, **SHARP)
        assert same_partition(sample.instance, result.instance_map), sample.name
        for item in result.instances:
            truth = np.unique(sample.instance[result.instance_map == item.id])
            assert item.class_id == truth[0] // INSTANCE_DIVISOR


def test_default_grouping_matches_85_percent_of_rendered_instances_at_iou_half(
    rendered: list[tuple[SceneSample, npt.NDArray[np.float32]]],
) -> None:
    """Measured: defaults 61 of 68 (90%); the sharp settings 66 of 68 (97%); no false instances.

    The defaults are tuned for a model's noisy offsets, so they merge instances whose
    centroids are a few pixels apart and drop instances of under 4 pixels.
    """
    for options, least in (({}, 0.85), (SHARP, 0.95)):
        totals = np.zeros(3, dtype=np.int64)
        for sample, offsets in rendered:
            totals += matched(sample.instance, group(sample.semantic, offsets, **options).instance_map)
        n_true, n_found, n_matched = totals
        assert n_matched >= least * n_true, (options, totals)
        assert n_matched == n_found, "every instance found is a real one"


def test_two_touching_cars_are_separated() -> None:
    semantic, instance = boxes_scene((CAR, 50, 70, 40, 70), (CAR, 50, 70, 70, 100))
    result = group(semantic, instance_offsets(instance)[0])
    assert len(result.instances) == 2
    assert same_partition(instance, result.instance_map)


def test_a_scene_without_things_has_no_instances() -> None:
    semantic, _ = boxes_scene()
    result = group(semantic, np.zeros((2, HEIGHT, WIDTH), dtype=np.float32))
    assert result.instances == ()
    assert result.instance_map.dtype == np.uint16 and result.instance_map.shape == (HEIGHT, WIDTH)
    assert not result.instance_map.any()


def test_offsets_with_one_pixel_of_noise_give_the_right_instances() -> None:
    semantic, instance = boxes_scene(
        (CAR, 40, 60, 20, 60), (CAR, 45, 60, 100, 125), (PERSON, 30, 70, 180, 190)
    )
    noise = np.random.default_rng(0).normal(0.0, 1.0, (2, HEIGHT, WIDTH)).astype(np.float32)
    result = group(semantic, instance_offsets(instance)[0] + noise)
    assert len(result.instances) == 3
    assert matched(instance, result.instance_map) == (3, 3, 3)


def test_class_is_the_majority_of_the_instance_pixels() -> None:
    semantic, instance = boxes_scene((CAR, 40, 60, 20, 60))
    semantic[40:45, 20:60] = PERSON  # a quarter of the car mislabelled
    result = group(semantic, instance_offsets(instance)[0], class_aware=False)
    [car] = result.instances
    assert car.class_id == CAR and car.pixel_count == 800


def test_class_aware_grouping_keeps_a_person_apart_from_the_car_it_stands_in_front_of() -> None:
    # Centred on the car, so both instances' votes land on the same point.
    semantic, instance = boxes_scene((CAR, 40, 60, 20, 60), (PERSON, 44, 56, 38, 42))
    offsets = instance_offsets(instance)[0]
    aware = group(semantic, offsets)
    assert sorted(item.class_id for item in aware.instances) == [PERSON, CAR]
    assert same_partition(instance, aware.instance_map)
    assert len(group(semantic, offsets, class_aware=False).instances) == 1


def test_bbox_is_pixel_edges_and_centroid_is_the_mean_pixel_centre() -> None:
    semantic, instance = boxes_scene((CAR, 10, 20, 30, 50))
    [car] = group(semantic, instance_offsets(instance)[0]).instances
    assert car.id == 1 and car.pixel_count == 200
    assert car.bbox == (30, 10, 50, 20)
    assert car.centroid == pytest.approx((40.0, 15.0))


def test_ids_count_down_from_the_largest_instance() -> None:
    semantic, instance = boxes_scene(
        (PERSON, 30, 50, 10, 16), (CAR, 40, 70, 100, 160), (CAR, 40, 50, 200, 220)
    )
    result = group(semantic, instance_offsets(instance)[0])
    counts = [item.pixel_count for item in result.instances]
    assert [item.id for item in result.instances] == [1, 2, 3]
    assert counts == sorted(counts, reverse=True) == [1800, 200, 120]
    for item in result.instances:
        assert int((result.instance_map == item.id).sum()) == item.pixel_count


def test_stray_thing_pixels_far_from_every_centre_join_no_instance() -> None:
    semantic, instance = boxes_scene((CAR, 40, 60, 20, 60))
    offsets = instance_offsets(instance)[0]
    semantic[100, 200:202] = CAR  # two mislabelled pixels voting for themselves: too few for a centre
    result = group(semantic, offsets)
    assert not result.instance_map[100, 200:202].any()
    assert [item.bbox for item in result.instances] == [(20, 40, 60, 60)]
    stretched = group(semantic, offsets, max_distance=None)
    assert [item.bbox for item in stretched.instances] == [(20, 40, 202, 101)]


def test_instances_smaller_than_min_pixels_are_dropped() -> None:
    semantic, instance = boxes_scene((CAR, 40, 60, 20, 60), (PERSON, 10, 12, 200, 201))
    offsets = instance_offsets(instance)[0]
    assert [item.class_id for item in group(semantic, offsets).instances] == [CAR]
    assert len(group(semantic, offsets, min_pixels=1, min_votes=1).instances) == 2


def test_non_finite_offsets_join_no_instance() -> None:
    semantic, instance = boxes_scene((CAR, 40, 60, 20, 60))
    offsets = instance_offsets(instance)[0]
    offsets[:, 40, 20] = np.nan
    result = group(semantic, offsets)
    assert result.instance_map[40, 20] == 0 and result.instances[0].pixel_count == 799


def test_optics_finds_the_same_two_blobs() -> None:
    pytest.importorskip("sklearn")
    semantic, instance = boxes_scene((CAR, 40, 55, 20, 40), (CAR, 45, 55, 100, 115))
    noise = np.random.default_rng(1).normal(0.0, 1.0, (2, HEIGHT, WIDTH)).astype(np.float32)
    offsets = instance_offsets(instance)[0] + noise
    optics = group(semantic, offsets, method="optics")
    peaks = group(semantic, offsets)
    assert len(optics.instances) == len(peaks.instances) == 2
    assert matched(instance, optics.instance_map) == (2, 2, 2)


def test_optics_without_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if not installed
    semantic, instance = boxes_scene((CAR, 40, 60, 20, 60))
    with pytest.raises(ImportError, match=re.escape("pip install 'scene-mtl[optics]'")):
        group(semantic, instance_offsets(instance)[0], method="optics")


def test_unknown_method_names_the_valid_ones() -> None:
    semantic, instance = boxes_scene((CAR, 40, 60, 20, 60))
    with pytest.raises(ValueError, match=r"'kmeans'.*valid methods: peaks, optics"):
        group(semantic, instance_offsets(instance)[0], method="kmeans")


def test_offsets_of_the_wrong_shape_are_refused() -> None:
    semantic, _ = boxes_scene()
    with pytest.raises(ValueError, match=r"offsets must be \[2, 128, 256\]"):
        group(semantic, np.zeros((2, 64, 128), dtype=np.float32))
