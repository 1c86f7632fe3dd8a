from __future__ import annotations

import math

import pytest
import torch

from training.data.classes import IGNORE_INDEX
from training.losses import depth_loss, instance_loss, semantic_loss, task_losses


def test_semantic_loss_averages_over_labelled_pixels_only() -> None:
    # Labelled pixels: uniform over 2 classes -> ln 2 each. Ignored pixel: confidently
    # wrong, which would raise the mean if it counted.
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, :, 0, 2] = torch.tensor([-50.0, 50.0])
    target = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    assert semantic_loss(logits, target).item() == pytest.approx(math.log(2))


def test_semantic_loss_is_zero_not_nan_when_everything_is_ignored() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGNORE_INDEX)
    loss = semantic_loss(logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_instance_loss_is_l1_norm_averaged_over_instance_pixels() -> None:
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    pred[0, :, 0, 0] = torch.tensor([1.0, -2.0])  # |1| + |-2| = 3 px
    pred[0, :, 1, 1] = 100.0  # outside the mask
    mask = torch.tensor([[[True, True], [False, False]]])
    assert instance_loss(pred, target, mask).item() == pytest.approx((3.0 + 0.0) / 2)


def test_instance_loss_without_instance_pixels_is_zero_and_backpropagates() -> None:
    pred = torch.randn(2, 2, 3, 3, requires_grad=True)
    loss = instance_loss(pred, torch.zeros(2, 2, 3, 3), torch.zeros(2, 3, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert pred.grad is not None and torch.all(pred.grad == 0)


def test_depth_loss_ignores_unmeasured_pixels_even_if_their_target_is_nan() -> None:
    pred = torch.tensor([[[[0.5, 0.1, 0.3]]]], requires_grad=True)
    target = torch.tensor([[[[0.25, 0.0, float("nan")]]]])
    mask = torch.tensor([[[[True, True, False]]]])
    loss = depth_loss(pred, target, mask)
    loss.backward()
    assert loss.item() == pytest.approx((0.25 + 0.1) / 2)
    assert pred.grad is not None
    assert torch.all(torch.isfinite(pred.grad))
    assert pred.grad[0, 0, 0, 2] == 0


def test_depth_loss_with_empty_mask_is_zero() -> None:
    pred = torch.ones(1, 1, 2, 2, requires_grad=True)
    loss = depth_loss(pred, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.bool))
    assert loss.item() == 0.0
    assert loss.requires_grad


def test_task_losses_computes_only_the_requested_tasks() -> None:
    outputs = {
        "semantic_logits": torch.zeros(1, 2, 2, 2),
        "inverse_depth": torch.ones(1, 1, 2, 2),
    }
    targets = {
        "semantic": torch.zeros(1, 2, 2, dtype=torch.long),
        "inverse_depth": torch.zeros(1, 1, 2, 2),
        "depth_mask": torch.ones(1, 1, 2, 2, dtype=torch.bool),
    }
    losses = task_losses(outputs, targets, tasks=("semantic", "depth"))
    assert set(losses) == {"semantic", "depth"}
    assert losses["depth"].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="valid tasks"):
        task_losses(outputs, targets, tasks=("segmentation",))


def test_a_sample_without_labels_for_a_task_adds_nothing_to_its_loss() -> None:
    from training.losses import labelled_tasks

    # Sample 0: procedural, all tasks labelled. Sample 1: CamVid, semantics only.
    pred = {
        "semantic_logits": torch.zeros(2, 2, 1, 2),
        "instance_offsets": torch.full((2, 2, 1, 2), 1.0),
        "inverse_depth": torch.full((2, 1, 1, 2), 0.5),
    }
    targets = {
        "semantic": torch.tensor([[[0, 1]], [[1, IGNORE_INDEX]]]),
        "instance_offsets": torch.zeros(2, 2, 1, 2),
        "instance_mask": torch.tensor([[[True, False]], [[False, False]]]),
        "inverse_depth": torch.tensor([[[[0.25, 0.0]]], [[[0.0, 0.0]]]]),
        "depth_mask": torch.tensor([[[[True, True]]], [[[False, False]]]]),
    }
    losses = task_losses(pred, targets)
    # Means over sample 0's pixels only: |1| + |1| = 2 px on its one instance pixel;
    # |0.5 - 0.25| and |0.5 - 0| on its two depth pixels.
    assert losses["instance"].item() == pytest.approx(2.0)
    assert losses["depth"].item() == pytest.approx((0.25 + 0.5) / 2)
    assert losses["semantic"].item() == pytest.approx(math.log(2))  # 3 labelled pixels, all ln 2
    assert {t: bool(v) for t, v in labelled_tasks(targets).items()} == {
        "semantic": True,
        "instance": True,
        "depth": True,
    }
    camvid_only = {k: v[1:] for k, v in targets.items()}
    assert {t: bool(v) for t, v in labelled_tasks(camvid_only).items()} == {
        "semantic": True,
        "instance": False,
        "depth": False,
    }
