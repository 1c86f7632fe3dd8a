"""Streaming evaluation metrics for the three tasks (the columns of the paper's Table 1).

``SceneMetrics`` accumulates sufficient statistics batch by batch (a confusion matrix,
error sums and pixel counts) in int64 / float64, so the result over a large evaluation
set does not depend on the batch size and does not lose precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import torch
from torch import Tensor

from training.data.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES


class SceneMetricValues(TypedDict):
    """The result of ``SceneMetrics.compute``; percentages in [0, 100].

    A float metric whose pixels never occurred (e.g. no instance pixel in the whole
    evaluation set) is ``nan``.
    """

    semantic_miou: float
    semantic_miou_labelled: float
    pixel_accuracy: float
    semantic_iou_per_class: dict[str, float | None]
    semantic_unlabelled_classes: list[str]
    instance_mean_error_px: float
    inverse_depth_mean_error: float
    depth_abs_rel: float
    depth_delta1: float


class SceneMetrics:
    """Accumulates semantic, instance and depth metrics over an evaluation set.

    Definitions:

    - ``semantic_miou``: mean over classes of ``TP / (TP + FP + FN)``, in percent, over
      the classes with a non-zero union (present in the ground truth or predicted);
      pixels labelled ``IGNORE_INDEX`` are excluded. ``semantic_iou_per_class`` maps each
      class name to its IoU in percent, ``None`` for classes with an empty union.
    - ``semantic_miou_labelled``: the same mean over the classes the ground truth holds
      only, the usual reading for a dataset that labels a subset of the class table
      (as CamVid is scored over its 11 classes). A pixel predicted as a class the data
      never labels still counts, as a miss of its true class; that class's own IoU,
      always 0, is left out.
    - ``semantic_unlabelled_classes``: those predicted classes the ground truth never
      holds, by name: their 0 in ``semantic_iou_per_class`` says the data has no such
      label, not that the model cannot see the class.
    - ``pixel_accuracy``: percent of labelled pixels whose predicted class is right.
    - ``instance_mean_error_px``: mean Euclidean distance, in pixels, between predicted
      and true ``(dy, dx)`` offset vectors over ground-truth instance pixels.
    - ``inverse_depth_mean_error``: mean ``|ρ_pred − ρ_gt|`` in 1/m over pixels with a
      depth measurement, sky (ρ = 0) included.
    - ``depth_abs_rel``: mean ``|d_pred − d_gt| / d_gt`` over measured pixels with finite
      depth (sky excluded), with ``d = 1 / ρ`` and ``ρ_pred`` clamped to at least
      ``min_inverse_depth`` (so a predicted 0 or negative inverse depth means "far", not a
      division by zero).
    - ``depth_delta1``: percent of those pixels with ``max(d_pred/d_gt, d_gt/d_pred) < 1.25``.

    Args:
        num_classes: number of semantic classes C.
        class_names: C names for ``semantic_iou_per_class``.
        min_inverse_depth: clamp for predicted inverse depth, 1/m (1e-3: at most 1 km).
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        class_names: Sequence[str] = CLASS_NAMES,
        min_inverse_depth: float = 1e-3,
    ) -> None:
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.min_inverse_depth = min_inverse_depth
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        # Rows: ground-truth class, columns: predicted class.
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.offset_error_sum = 0.0
        self.instance_pixels = 0
        self.inverse_depth_error_sum = 0.0
        self.depth_pixels = 0
        self.abs_rel_sum = 0.0
        self.delta1_pixels = 0
        self.finite_depth_pixels = 0

    @torch.no_grad()
    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        """Add one batch.

        Args:
            outputs: model outputs. Semantic: ``"semantic_logits"`` ``[N, C, H, W]`` or
                predicted train ids ``"semantic"`` ``[N, H, W]``; ``"instance_offsets"``
                ``[N, 2, H, W]``, pixels, ``(dy, dx)``; ``"inverse_depth"``
                ``[N, 1, H, W]``, 1/m. A task whose output is absent is not scored.
            targets: ``training.targets.build_targets`` output collated with a batch
                dimension: ``"semantic"`` ``[N, H, W]``, ``"instance_offsets"``
                ``[N, 2, H, W]``, ``"instance_mask"`` ``[N, H, W]``, ``"inverse_depth"``
                and ``"depth_mask"`` ``[N, 1, H, W]``.
        """
        if "semantic_logits" in outputs:
            self._update_semantic(outputs["semantic_logits"].argmax(dim=1), targets["semantic"])
        elif "semantic" in outputs:
            self._update_semantic(outputs["semantic"], targets["semantic"])
        if "instance_offsets" in outputs:
            self._update_instance(
                outputs["instance_offsets"], targets["instance_offsets"], targets["instance_mask"]
            )
        if "inverse_depth" in outputs:
            self._update_depth(outputs["inverse_depth"], targets["inverse_depth"], targets["depth_mask"])

    def _update_semantic(self, prediction: Tensor, target: Tensor) -> None:
        prediction = prediction.long()
        target = target.long()
        labelled = target != IGNORE_INDEX
        gt = target[labelled]
        pred = prediction[labelled]
        # Out-of-range ids would silently land in the wrong confusion cell.
        for name, ids in (("ground-truth", gt), ("predicted", pred)):
            if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_classes):
                raise ValueError(f"{name} class ids must be in [0, {self.num_classes}) or {IGNORE_INDEX}")
        counts = torch.bincount(gt * self.num_classes + pred, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes).cpu()

    def _update_instance(self, prediction: Tensor, target: Tensor, mask: Tensor) -> None:
        distance = torch.linalg.vector_norm(prediction.float() - target.float(), dim=1)
        self.offset_error_sum += distance[mask].sum(dtype=torch.float64).item()
        self.instance_pixels += int(mask.sum().item())

    def _update_depth(self, prediction: Tensor, target: Tensor, mask: Tensor) -> None:
        prediction = prediction.float()[mask]
        target = target.float()[mask]
        self.inverse_depth_error_sum += (prediction - target).abs().sum(dtype=torch.float64).item()
        self.depth_pixels += prediction.numel()

        finite = target > 0
        depth_gt = 1.0 / target[finite].double()
        depth_pred = 1.0 / prediction[finite].double().clamp(min=self.min_inverse_depth)
        self.abs_rel_sum += ((depth_pred - depth_gt).abs() / depth_gt).sum().item()
        ratio = torch.maximum(depth_pred / depth_gt, depth_gt / depth_pred)
        self.delta1_pixels += int((ratio < 1.25).sum().item())
        self.finite_depth_pixels += depth_gt.numel()

    def compute(self) -> SceneMetricValues:
        """The metrics over everything accumulated since construction or ``reset``."""
        confusion = self.confusion.double()
        true_positive = confusion.diagonal()
        union = confusion.sum(dim=0) + confusion.sum(dim=1) - true_positive
        present = union > 0
        in_truth = confusion.sum(dim=1) > 0  # rows: ground truth
        iou = torch.where(present, true_positive / union.clamp(min=1), 0.0) * 100
        labelled = confusion.sum().item()
        return {
            "semantic_miou": iou[present].mean().item() if present.any() else float("nan"),
            "semantic_miou_labelled": iou[in_truth].mean().item() if in_truth.any() else float("nan"),
            "pixel_accuracy": _percent(true_positive.sum().item(), labelled),
            "semantic_iou_per_class": {
                name: iou[c].item() if present[c] else None for c, name in enumerate(self.class_names)
            },
            "semantic_unlabelled_classes": [
                name for c, name in enumerate(self.class_names) if present[c] and not in_truth[c]
            ],
            "instance_mean_error_px": _ratio(self.offset_error_sum, self.instance_pixels),
            "inverse_depth_mean_error": _ratio(self.inverse_depth_error_sum, self.depth_pixels),
            "depth_abs_rel": _ratio(self.abs_rel_sum, self.finite_depth_pixels),
            "depth_delta1": _percent(self.delta1_pixels, self.finite_depth_pixels),
        }


def _ratio(total: float, count: float) -> float:
    return total / count if count else float("nan")


def _percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else float("nan")
