from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from training.data.classes import CLASS_NAMES, IGNORE_INDEX, INSTANCE_DIVISOR, NUM_CLASSES
from training.data.sample import SceneSample
from training.metrics import SceneMetrics
from training.targets import build_targets


def _batch_targets() -> dict[str, Tensor]:
    """Targets of one fabricated 8x8 sample (road, a car, sky, an unlabelled pixel)."""
    semantic = np.zeros((8, 8), dtype=np.uint8)
    instance = np.zeros((8, 8), dtype=np.int32)
    semantic[2:5, 3:7] = 13
    instance[2:5, 3:7] = 13 * INSTANCE_DIVISOR
    semantic[0] = 10
    semantic[7, 7] = IGNORE_INDEX
    depth = np.linspace(2.0, 40.0, 64, dtype=np.float32).reshape(8, 8)
    depth[0] = np.inf
    depth[7, 7] = np.nan
    sample = SceneSample(np.zeros((8, 8, 3), np.uint8), semantic, instance, depth, "test/0")
    sample.check()
    return {k: torch.from_numpy(v).unsqueeze(0) for k, v in build_targets(sample).items()}


def test_perfect_prediction_scores_perfectly() -> None:
    targets = _batch_targets()
    labels = targets["semantic"].clamp(max=NUM_CLASSES - 1)
    outputs = {
        "semantic_logits": torch.nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2),
        "instance_offsets": targets["instance_offsets"].clone(),
        "inverse_depth": targets["inverse_depth"].clone(),
    }
    metrics = SceneMetrics()
    metrics.update(outputs, targets)
    result = metrics.compute()
    assert result["semantic_miou"] == pytest.approx(100.0)
    assert result["pixel_accuracy"] == pytest.approx(100.0)
    assert result["instance_mean_error_px"] == 0.0
    assert result["inverse_depth_mean_error"] == 0.0
    assert result["depth_abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert result["depth_delta1"] == 100.0
    per_class = result["semantic_iou_per_class"]
    assert list(per_class) == list(CLASS_NAMES)
    assert {name for name, iou in per_class.items() if iou is not None} == {"road", "sky", "car"}
    assert per_class["car"] == pytest.approx(100.0)


def test_hand_made_confusion_gives_known_iou() -> None:
    # gt:   0 0 1 1 255      pred: 0 1 1 2 0
    # class 0: TP 1, FN 1, FP 0 (the ignored pixel does not count) -> 1/2
    # class 1: TP 1, FP 1, FN 1 -> 1/3
    # class 2: predicted once, never true -> 0 (counts: non-zero union)
    # class 3: never seen -> None, left out of the mean
    target = torch.tensor([[[0, 0, 1, 1, IGNORE_INDEX]]])
    prediction = torch.tensor([[[0, 1, 1, 2, 0]]])
    metrics = SceneMetrics(num_classes=4, class_names=("a", "b", "c", "d"))
    # Streamed in two halves: the result must not depend on how batches are cut.
    metrics.update({"semantic": prediction[..., :2]}, {"semantic": target[..., :2]})
    metrics.update({"semantic": prediction[..., 2:]}, {"semantic": target[..., 2:]})
    result = metrics.compute()
    assert result["semantic_iou_per_class"] == pytest.approx({"a": 50.0, "b": 100 / 3, "c": 0.0, "d": None})
    assert result["semantic_miou"] == pytest.approx((50.0 + 100 / 3 + 0.0) / 3)
    # Over the classes the ground truth holds (a, b): c's false positive still lowers b.
    assert result["semantic_miou_labelled"] == pytest.approx((50.0 + 100 / 3) / 2)
    assert result["semantic_unlabelled_classes"] == ["c"]  # its 0 is the data's, not the model's
    assert result["pixel_accuracy"] == pytest.approx(50.0)
    assert math.isnan(result["instance_mean_error_px"])  # no instance output given


def test_logits_and_labels_give_the_same_result() -> None:
    targets = _batch_targets()
    logits = torch.randn(1, NUM_CLASSES, 8, 8, generator=torch.Generator().manual_seed(0))
    from_logits, from_labels = SceneMetrics(), SceneMetrics()
    from_logits.update({"semantic_logits": logits}, targets)
    from_labels.update({"semantic": logits.argmax(dim=1)}, targets)
    a, b = from_logits.compute(), from_labels.compute()
    assert a["semantic_iou_per_class"] == b["semantic_iou_per_class"]
    assert (a["semantic_miou"], a["pixel_accuracy"]) == (b["semantic_miou"], b["pixel_accuracy"])


def test_out_of_range_predicted_class_is_an_error() -> None:
    metrics = SceneMetrics(num_classes=2, class_names=("a", "b"))
    with pytest.raises(ValueError, match="predicted class ids"):
        metrics.update({"semantic": torch.tensor([[[5]]])}, {"semantic": torch.tensor([[[0]]])})


def test_offset_error_is_mean_euclidean_distance_over_instance_pixels() -> None:
    target = torch.zeros(1, 2, 2, 2)
    prediction = torch.zeros(1, 2, 2, 2)
    prediction[0, :, 0, 0] = torch.tensor([3.0, -4.0])  # 5 px off
    prediction[0, :, 1, 1] = 50.0  # not an instance pixel
    mask = torch.tensor([[[True, True], [False, False]]])
    metrics = SceneMetrics()
    metrics.update({"instance_offsets": prediction}, {"instance_offsets": target, "instance_mask": mask})
    assert metrics.compute()["instance_mean_error_px"] == pytest.approx((5.0 + 0.0) / 2)


def test_depth_errors_by_hand() -> None:
    # Pixels: exact at 2 m; 4 m predicted for 2 m; sky predicted at 10 m; unmeasured.
    target = torch.tensor([[[[0.5, 0.5, 0.0, 0.0]]]])
    prediction = torch.tensor([[[[0.5, 0.25, 0.1, 7.0]]]])
    mask = torch.tensor([[[[True, True, True, False]]]])
    metrics = SceneMetrics()
    metrics.update({"inverse_depth": prediction}, {"inverse_depth": target, "depth_mask": mask})
    result = metrics.compute()
    assert result["inverse_depth_mean_error"] == pytest.approx((0.0 + 0.25 + 0.1) / 3)
    # Sky has no finite depth: only the two 2 m pixels enter abs rel and delta1.
    assert result["depth_abs_rel"] == pytest.approx((0.0 + 2.0 / 2.0) / 2)
    assert result["depth_delta1"] == pytest.approx(50.0)


def test_non_positive_predicted_inverse_depth_is_far_not_a_crash() -> None:
    target = torch.tensor([[[[0.5, 0.5]]]])
    prediction = torch.tensor([[[[0.0, -1.0]]]])
    mask = torch.ones(1, 1, 1, 2, dtype=torch.bool)
    metrics = SceneMetrics(min_inverse_depth=1e-3)
    metrics.update({"inverse_depth": prediction}, {"inverse_depth": target, "depth_mask": mask})
    result = metrics.compute()
    assert result["depth_abs_rel"] == pytest.approx((1000.0 - 2.0) / 2.0)
    assert result["depth_delta1"] == 0.0


def test_reset_forgets_accumulated_batches() -> None:
    metrics = SceneMetrics(num_classes=2, class_names=("a", "b"))
    metrics.update({"semantic": torch.tensor([[[1]]])}, {"semantic": torch.tensor([[[0]]])})
    metrics.reset()
    metrics.update({"semantic": torch.tensor([[[0]]])}, {"semantic": torch.tensor([[[0]]])})
    assert metrics.compute()["semantic_miou"] == pytest.approx(100.0)
