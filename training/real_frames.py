"""Scores on real frames beside the procedural ones: CamVid's labels and measured depth.

Both feed each frame in as the service would (resized to the training size) and score
the prediction brought back to the frame's full size, so the numbers are what a user
of the served model would see. `scene-eval` reports them under ``camvid`` and
``realdepth``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from training.data.camvid import CAMVID_CLASSES, CAMVID_VOID, CamVidScenes, train_id_to_camvid
from training.data.sample import resize_image
from training.model import to_model_input
from training.realdepth import MeasuredFrame, constant_baseline, depth_metrics, summarize


@torch.no_grad()
def camvid_logits(
    model: nn.Module,
    scenes: CamVidScenes,
    *,
    batch_size: int = 8,
    device: torch.device | None = None,
    progress: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Each frame's semantic logits ``[C, H, W]`` at its labels' full size, with those labels.

    The frame goes in as the service sends it (resized to the training size); the logits
    are resized bilinearly back to the frame's full size. The labels are CamVid class
    indices, ``int64 [H, W]`` (void included). ``model`` should be in eval mode.
    """
    device = device or torch.device("cpu")
    starts = range(0, len(scenes), batch_size)
    for start in tqdm(starts, desc="CamVid", unit="batch", disable=not progress, file=sys.stderr):
        indices = range(start, min(start + batch_size, len(scenes)))
        images = np.stack([scenes[i].image for i in indices])
        logits = model(to_model_input(torch.from_numpy(images).to(device)))["semantic_logits"].float()
        for row, index in enumerate(indices):
            labels = torch.from_numpy(scenes.camvid_labels(index).astype(np.int64)).to(device)
            full = F.interpolate(
                logits[row : row + 1], size=labels.shape, mode="bilinear", align_corners=False
            )
            yield full[0], labels


@torch.no_grad()
def evaluate_camvid(
    model: nn.Module,
    scenes: CamVidScenes,
    *,
    batch_size: int = 8,
    device: torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Semantic scores of ``model`` on CamVid frames, in CamVid's own 11 classes.

    Each frame goes in as the service sends it (resized to the training size); the
    logits are resized bilinearly back to the frame's full size, the argmax is mapped
    onto CamVid's classes (`train_id_to_camvid`) and compared with the original labels,
    void pixels excluded. ``camvid_miou`` is the mean IoU over the 11 classes (percent);
    ``camvid_iou_per_class``, ``camvid_recall_per_class`` and ``camvid_precision_per_class``
    map each class to its IoU, recall and precision; ``camvid_confusion`` holds the pixel
    counts (rows labelled, columns predicted); ``camvid_global_accuracy`` is the percent of
    labelled pixels right.
    """
    was_training = model.training
    model.eval()
    to_camvid = torch.from_numpy(train_id_to_camvid().astype(np.int64)).to(device or torch.device("cpu"))
    classes = len(CAMVID_CLASSES)
    confusion = torch.zeros(classes, classes, dtype=torch.int64, device=to_camvid.device)
    for full, labels in camvid_logits(model, scenes, batch_size=batch_size, device=device, progress=progress):
        predicted = to_camvid[full.argmax(0)]
        valid = labels != CAMVID_VOID
        pairs = labels[valid] * classes + predicted[valid]
        confusion += torch.bincount(pairs, minlength=classes * classes).view(classes, classes)
    model.train(was_training)
    true_positive = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan) * 100
    labelled, predicted_as = confusion.sum(1).double(), confusion.sum(0).double()
    recall = torch.where(labelled > 0, true_positive / labelled.clamp(min=1), torch.nan) * 100
    precision = torch.where(predicted_as > 0, true_positive / predicted_as.clamp(min=1), torch.nan) * 100

    def by_class(values: Tensor) -> dict[str, float | None]:
        return {
            name: None if torch.isnan(value) else round(float(value), 2)
            for name, value in zip(CAMVID_CLASSES, values, strict=True)
        }

    return {
        "camvid_miou": float(iou.nanmean()),
        "camvid_global_accuracy": float(true_positive.sum() / confusion.sum().clamp(min=1) * 100),
        "camvid_iou_per_class": by_class(iou),
        # Of each class's labelled pixels, the share found; of its predicted pixels, the share right.
        "camvid_recall_per_class": by_class(recall),
        "camvid_precision_per_class": by_class(precision),
        # Pixel counts, rows the labelled class, columns the predicted one (CAMVID_CLASSES order).
        "camvid_confusion": confusion.tolist(),
        "frames": len(scenes),
    }


@torch.no_grad()
def evaluate_real_depth(
    model: nn.Module, frames: list[MeasuredFrame], height: int, width: int, device: torch.device | None = None
) -> dict[str, Any]:
    """Depth of ``model`` on real photos against measured depth (`training.realdepth`).

    Each photo goes in as the service sends it (resized to ``height`` x ``width``);
    the predicted inverse depth is resized bilinearly back to the photo's size, and
    depth = 1 / inverse depth is scored where depth was measured, median-scaled, beside
    a constant depth. Returns per-frame metrics and their means (each frame counts once).
    """
    device = device or torch.device("cpu")
    was_training = model.training
    model.eval()
    per_frame: dict[str, dict[str, float]] = {}
    constant: dict[str, dict[str, float]] = {}
    for frame in frames:
        image = to_model_input(torch.from_numpy(resize_image(frame.image, height, width)))[None].to(device)
        inverse = model(image)["inverse_depth"].float()
        inverse = F.interpolate(inverse, size=frame.depth.shape, mode="bilinear", align_corners=False)
        inverse_np = inverse[0, 0].cpu().numpy().astype(np.float64)
        with np.errstate(divide="ignore"):
            depth = np.where(inverse_np > 0, 1.0 / np.maximum(inverse_np, 1e-12), np.inf)
        per_frame[frame.name] = depth_metrics(depth, frame.depth)
        constant[frame.name] = constant_baseline(frame.depth)
    model.train(was_training)
    return {
        "frames": len(frames),
        "model": summarize(per_frame),
        "constant_depth": summarize(constant),
        "per_frame": per_frame,
        "per_frame_constant": constant,
    }
