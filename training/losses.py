"""Per-task losses (Kendall et al. 2018, Sec. 4): one scalar per task head.

Every loss is a mean over the pixels that carry a label for that task, pooled over
the batch, so a sample without any such pixel (a CamVid frame has no instance or depth
labels) contributes nothing to that task's loss. When the whole batch has no such
pixel the loss is an exact 0 that is still connected to the graph, never
``0 / 0 = nan``, so ``backward()`` keeps working and the head gets no gradient from
that batch; `labelled_tasks` tells the loss weighting, which then leaves the task
out of the step altogether (see `training.weighting`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy

from scene_contract.model import DEPTH_TASK, INSTANCE_TASK, SEMANTIC_TASK, TASKS
from training.data.classes import IGNORE_INDEX


def _masked_mean(per_pixel: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``per_pixel`` over the pixels where ``mask`` is True (0 if none are).

    ``torch.where`` rather than multiplying by the mask: unlabelled pixels may hold
    nan/inf targets, and ``nan * 0`` is nan while the unselected branch of ``where``
    contributes neither value nor gradient.
    """
    selected = torch.where(mask, per_pixel, torch.zeros_like(per_pixel))
    # clamp keeps the empty case at 0 / 1 without a host sync on `mask.any()`.
    return selected.sum() / mask.sum().clamp(min=1)


def semantic_loss(logits: Tensor, target: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """Cross-entropy averaged over labelled pixels, each weighted by its class's weight.

    Args:
        logits: ``float [N, C, H, W]`` unnormalised class scores.
        target: ``int64 [N, H, W]`` train ids, ``IGNORE_INDEX`` (255) where unlabelled.
        class_weights: ``float [C]`` (`training.class_weights`); ``None``: all 1.

    Returns:
        Scalar tensor, nats per (weighted) labelled pixel; 0 if no pixel is labelled.
    """
    # A "sum" reduction divided by our own total weight: the built-in "mean" returns nan
    # when every pixel is ignored.
    total = cross_entropy(logits, target, weight=class_weights, ignore_index=IGNORE_INDEX, reduction="sum")
    labelled = target != IGNORE_INDEX
    if class_weights is None:
        return total / labelled.sum().clamp(min=1)
    pixel_weights = class_weights[torch.where(labelled, target, 0)]
    return total / torch.where(labelled, pixel_weights, 0).sum().clamp(min=1e-6)


def instance_loss(pred_offsets: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """L1 offset error averaged over instance pixels: mean of ``|Δdy| + |Δdx|``.

    Per pixel this is the L1 norm of the 2-vector error (as in the paper's
    ``1/|N_I| Σ ||x_n − x̂_n||_1``), so the loss is in pixels per instance pixel.

    Args:
        pred_offsets: ``float [N, 2, H, W]``, pixels, ``(dy, dx)`` to the instance centroid.
        target: ``float [N, 2, H, W]``, same layout.
        mask: ``bool [N, H, W]``, True on instance pixels.

    Returns:
        Scalar tensor, pixels; 0 if there are no instance pixels.
    """
    per_pixel = (pred_offsets - target).abs().sum(dim=1)
    return _masked_mean(per_pixel, mask)


def depth_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """L1 inverse-depth error averaged over pixels with a measurement.

    Args:
        pred: ``float [N, 1, H, W]`` inverse depth, 1/m.
        target: ``float [N, 1, H, W]`` inverse depth, 1/m (0 for sky).
        mask: ``bool [N, 1, H, W]``, True where the depth was measured.

    Returns:
        Scalar tensor, 1/m; 0 if no pixel has a measurement.
    """
    return _masked_mean((pred - target).abs(), mask)


def labelled_tasks(targets: dict[str, Tensor], tasks: tuple[str, ...] = TASKS) -> dict[str, Tensor]:
    """Whether the batch has any labelled pixel for each task in ``tasks``.

    Returns ``bool`` scalar tensors on the targets' device (no host sync), keyed by
    task: semantic pixels not ``IGNORE_INDEX``, instance pixels, depth measurements.
    """
    masks = {
        SEMANTIC_TASK: lambda: targets["semantic"] != IGNORE_INDEX,
        INSTANCE_TASK: lambda: targets["instance_mask"],
        DEPTH_TASK: lambda: targets["depth_mask"],
    }
    return {task: masks[task]().any() for task in tasks}


def task_losses(
    outputs: dict[str, Tensor],
    targets: dict[str, Tensor],
    tasks: tuple[str, ...] = TASKS,
    class_weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """The loss of each task in ``tasks``, keyed by task name (see ``weighting.TASKS``).

    Args:
        outputs: model outputs ``"semantic_logits"`` ``[N, C, H, W]``,
            ``"instance_offsets"`` ``[N, 2, H, W]`` and ``"inverse_depth"`` ``[N, 1, H, W]``;
            only the heads of the requested tasks are read.
        targets: ``training.targets.build_targets`` output collated to tensors with a
            batch dimension.
        tasks: which losses to compute; a subset of ``TASKS``.
        class_weights: the semantic loss's per-class weights (`semantic_loss`).
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; valid tasks: {', '.join(TASKS)}")
    losses: dict[str, Tensor] = {}
    if SEMANTIC_TASK in tasks:
        losses[SEMANTIC_TASK] = semantic_loss(outputs["semantic_logits"], targets["semantic"], class_weights)
    if INSTANCE_TASK in tasks:
        losses[INSTANCE_TASK] = instance_loss(
            outputs["instance_offsets"], targets["instance_offsets"], targets["instance_mask"]
        )
    if DEPTH_TASK in tasks:
        losses[DEPTH_TASK] = depth_loss(
            outputs["inverse_depth"], targets["inverse_depth"], targets["depth_mask"]
        )
    return losses
