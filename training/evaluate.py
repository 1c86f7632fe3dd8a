"""`scene-eval`: a checkpoint's metrics on a held-out split, and a picture of its predictions."""

from __future__ import annotations

import argparse
import json
import sys
from copy import deepcopy as copy_module
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.checkpoint import CheckpointError, model_from_checkpoint, weighting_from_checkpoint
from training.data.camvid import CAMVID_CLASSES, CAMVID_VOID, CamVidScenes, train_id_to_camvid
from training.data.cityscapes import CityscapesScenes
from training.data.classes import CLASSES, IGNORE_INDEX, is_thing_table
from training.data.procedural import SPLITS, ProceduralScenes
from training.data.sample import DataConfigError, resize_image
from training.data.visualize import colorize_inverse_depth, colorize_semantic
from training.dataset import SceneSource, TaskDataset
from training.metrics import SceneMetrics
from training.model import to_model_input
from training.realdepth import (
    MeasuredFrame,
    constant_baseline,
    depth_metrics,
    read_measured_frames,
    summarize,
)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    scenes: SceneSource,
    *,
    batch_size: int = 8,
    device: torch.device | None = None,
    workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics of ``model`` over every scene of ``scenes`` (see `SceneMetrics` for definitions)."""
    device = device or torch.device("cpu")
    was_training = model.training
    model.eval()
    # Its own generator: evaluating mid-run must not draw from the global RNG that
    # dropout uses, or a resumed run would no longer match an uninterrupted one.
    loader = DataLoader(
        TaskDataset(scenes), batch_size=batch_size, num_workers=workers, generator=torch.Generator()
    )
    metrics = SceneMetrics()
    for batch in tqdm(loader, desc="evaluating", unit="batch", disable=not progress, file=sys.stderr):
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = model(batch["image"])
        metrics.update({k: v.float() for k, v in outputs.items()}, batch)
    model.train(was_training)
    return dict(metrics.compute())


class BatchStatistics(nn.Module):
    """A copy of ``model`` whose batch norms normalise with each batch's own statistics, in
    eval mode as well (and never update their running ones); every other layer is as in
    ``model``.

    Scored beside the model itself, it tells whether the running statistics fit the
    weights: a large gap means they do not (the failure docs/study.md describes for some
    runs with large learned depth weights), however good the training losses were.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy_module(model)
        for module in self._norms():
            module.momentum = 0.0
        self.eval()

    def _norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> BatchStatistics:
        super().train(mode)
        for module in self._norms():
            module.train(True)  # batch statistics whatever the mode; momentum 0 keeps the running ones
        return self

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        outputs: dict[str, Tensor] = self.model(images)
        return outputs


@torch.no_grad()
def baseline_metrics(
    train_scenes: SceneSource, scenes: SceneSource, *, batch_size: int = 8
) -> dict[str, Any]:
    """Metrics of trivial constant predictions, the floor a model must clear.

    From ``train_scenes``: the majority class over labelled pixels, and the median
    inverse depth over valid pixels (sky counts, at 0), the constant with the smallest
    mean absolute error, which is the metric. On ``scenes`` every pixel is predicted as
    that class, with zero instance offsets and that inverse depth.
    """
    counts = torch.zeros(256, dtype=torch.float64)
    inverse_depths = []
    for batch in DataLoader(TaskDataset(train_scenes), batch_size=batch_size):
        labels = batch["semantic"][batch["semantic"] != IGNORE_INDEX]
        counts += torch.bincount(labels.flatten(), minlength=256).double()
        inverse_depths.append(batch["inverse_depth"][batch["depth_mask"]].numpy())
    majority = int(counts.argmax().item())
    measured = np.concatenate(inverse_depths)
    median_inverse = float(np.median(measured)) if measured.size else 0.0
    metrics = SceneMetrics()
    for batch in DataLoader(TaskDataset(scenes), batch_size=batch_size):
        n, _, h, w = batch["image"].shape
        constant = {
            "semantic": torch.full((n, h, w), majority, dtype=torch.long),
            "instance_offsets": torch.zeros(n, 2, h, w),
            "inverse_depth": torch.full((n, 1, h, w), median_inverse),
        }
        metrics.update(constant, batch)
    return {
        "majority_class": CLASSES[majority].name,
        "median_inverse_depth": median_inverse,
        "train_scenes": len(train_scenes),
        **metrics.compute(),
    }


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
    ``camvid_iou_per_class`` maps each class to its IoU; ``camvid_global_accuracy`` is
    the percent of labelled pixels right.
    """
    device = device or torch.device("cpu")
    was_training = model.training
    model.eval()
    to_camvid = torch.from_numpy(train_id_to_camvid().astype(np.int64)).to(device)
    classes = len(CAMVID_CLASSES)
    confusion = torch.zeros(classes, classes, dtype=torch.int64, device=device)
    starts = range(0, len(scenes), batch_size)
    for start in tqdm(starts, desc="CamVid", unit="batch", disable=not progress, file=sys.stderr):
        indices = range(start, min(start + batch_size, len(scenes)))
        images = np.stack([scenes[i].image for i in indices])
        batch = to_model_input(torch.from_numpy(images).to(device))
        logits = model(batch)["semantic_logits"].float()
        for row, index in enumerate(indices):
            labels = torch.from_numpy(scenes.camvid_labels(index).astype(np.int64)).to(device)
            full = F.interpolate(
                logits[row : row + 1], size=labels.shape, mode="bilinear", align_corners=False
            )
            predicted = to_camvid[full[0].argmax(0)]
            valid = labels != CAMVID_VOID
            pairs = labels[valid] * classes + predicted[valid]
            confusion += torch.bincount(pairs, minlength=classes * classes).view(classes, classes)
    model.train(was_training)
    true_positive = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan) * 100
    per_class = {
        name: None if torch.isnan(value) else round(float(value), 2)
        for name, value in zip(CAMVID_CLASSES, iou, strict=True)
    }
    return {
        "camvid_miou": float(iou.nanmean()),
        "camvid_global_accuracy": float(true_positive.sum() / confusion.sum().clamp(min=1) * 100),
        "camvid_iou_per_class": per_class,
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


@torch.no_grad()
def camvid_prediction_grid(
    model: nn.Module, scenes: CamVidScenes, count: int = 4, with_data: bool = False
) -> Image.Image:
    """Rows of the model's classes, instance offsets (on predicted things) and inverse depth.

    ``with_data`` puts the frame and its labels in front; leave it off for pictures that
    are to be published, since CamVid's frames and labels may not be redistributed.
    """
    model.eval()
    things = torch.from_numpy(is_thing_table())
    rows, titles = (
        [],
        (["image", "labels"] if with_data else []) + ["classes", "instance offsets", "inv. depth"],
    )
    # Frames spread over the split: neighbouring frames of a video are near-duplicates.
    for i in np.linspace(0, len(scenes) - 1, min(count, len(scenes))).round().astype(int):
        sample = scenes[int(i)]
        image = to_model_input(torch.from_numpy(sample.image))
        outputs = model(image[None])
        classes = outputs["semantic_logits"][0].argmax(0)
        thing_pixels = things[classes].numpy()
        panels = [
            colorize_semantic(classes.numpy().astype(np.uint8)),
            colorize_offsets(outputs["instance_offsets"][0].numpy(), thing_pixels),
            colorize_inverse_depth(outputs["inverse_depth"][0, 0].numpy()),
        ]
        if with_data:
            panels = [sample.image, colorize_semantic(sample.semantic), *panels]
        gap = np.full((sample.height, 2, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1))
    return _titled(rows, titles, scenes[0].width)


@torch.no_grad()
def prediction_grid(model: nn.Module, scenes: SceneSource, count: int = 4) -> Image.Image:
    """Rows of image, then truth and prediction for semantic classes, instance offsets and depth.

    Offsets are drawn as colours: hue = direction, brightness = length (up to 32 px).
    """
    model.eval()
    dataset = TaskDataset(scenes)
    rows = []
    for i in range(min(count, len(dataset))):
        item = dataset[i]
        outputs = model(item["image"][None])
        sample = scenes[i]
        panels = [
            sample.image,
            colorize_semantic(item["semantic"].numpy().clip(0, 255).astype(np.uint8)),
            colorize_semantic(outputs["semantic_logits"][0].argmax(0).numpy().astype(np.uint8)),
            colorize_offsets(item["instance_offsets"].numpy(), item["instance_mask"].numpy()),
            colorize_offsets(outputs["instance_offsets"][0].numpy(), item["instance_mask"].numpy()),
            colorize_inverse_depth(
                np.where(item["depth_mask"][0].numpy(), item["inverse_depth"][0].numpy(), np.nan)
            ),
            colorize_inverse_depth(outputs["inverse_depth"][0, 0].numpy()),
        ]
        gap = np.full((sample.height, 2, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1))
    titles = ["image", "semantic", "predicted", "offsets", "predicted", "inv. depth", "predicted"]
    return _titled(rows, titles, scenes[0].width)


def _titled(rows: list[npt.NDArray[np.uint8]], titles: list[str], panel_width: int) -> Image.Image:
    """Stack ``rows`` of panels with a white gap and write ``titles`` above the columns."""
    body = np.concatenate([x for r in rows for x in (r, np.full((2, r.shape[1], 3), 255, np.uint8))][:-1])
    canvas = Image.new("RGB", (body.shape[1], body.shape[0] + 14), "white")
    canvas.paste(Image.fromarray(body), (0, 14))
    draw = ImageDraw.Draw(canvas)
    for i, title in enumerate(titles):
        draw.text((i * (panel_width + 2) + 4, 1), title, fill="black")
    return canvas


def colorize_offsets(offsets: npt.NDArray[np.floating], mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """Offsets ``[2, H, W]`` (dy, dx) in pixels as colours; black outside ``mask``."""
    dy, dx = offsets
    angle = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
    value = np.clip(np.hypot(dy, dx) / 32.0, 0.15, 1.0)
    hsv = np.stack([angle * 255, np.full_like(angle, 220), value * 255], axis=-1).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB")).copy()
    rgb[~mask.astype(bool)] = 0
    return rgb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scene-eval",
        description="Evaluate a scene-train checkpoint on held-out scenes: semantic mIoU, instance offset "
        "error, inverse-depth error and more, as JSON, plus a PNG grid of predictions against ground truth.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint from scene-train")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON file to write")
    parser.add_argument("--grid", type=Path, help="prediction grid PNG (default: next to --out)")
    parser.add_argument("--count", type=int, default=500, help="procedural scenes to evaluate (default 500)")
    parser.add_argument(
        "--seed",
        type=int,
        default=1000,
        help="procedural seed (default 1000, never a training seed by default)",
    )
    parser.add_argument("--split", choices=SPLITS, default="test", help="procedural split (default test)")
    parser.add_argument(
        "--cityscapes", type=Path, help="evaluate on this Cityscapes root's val split instead"
    )
    parser.add_argument(
        "--camvid",
        type=Path,
        help="also score this CamVid root's val split in CamVid's 11 classes (mIoU, per-class IoU)",
    )
    parser.add_argument(
        "--camvid-grid",
        type=Path,
        help="PNG of the model's predictions on CamVid val frames (predictions only; with --camvid)",
    )
    parser.add_argument(
        "--realdepth",
        type=Path,
        help="also score depth on the real photos with measured depth under this folder "
        "(cityscapes_tiny/, kitti/): median-scaled AbsRel, delta<1.25, rank correlation, beside a "
        "constant depth",
    )
    parser.add_argument(
        "--batchnorm-check",
        action="store_true",
        help="also score the procedural scenes with batch norms on each batch's own statistics: a large "
        "gap to the model's own scores means its running statistics do not fit its weights",
    )
    parser.add_argument(
        "--baseline-scenes",
        type=int,
        default=200,
        help="training scenes for the trivial baselines' constants (procedural only; 0 = skip; default 200)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    args = parser.parse_args(argv)
    try:
        if args.count <= 0 or args.batch_size <= 0 or args.baseline_scenes < 0:
            raise DataConfigError("--count and --batch-size must be positive, --baseline-scenes >= 0")
        model, state = model_from_checkpoint(args.checkpoint)
        sigma = weighting_from_checkpoint(state).sigma()
        config = state["config"]
        h, w = config.data.height, config.data.width
        scenes: SceneSource
        if args.cityscapes:
            scenes = CityscapesScenes(args.cityscapes, split="val", height=h, width=w)
            dataset_info: dict[str, Any] = {
                "source": "cityscapes",
                "root": str(args.cityscapes),
                "split": "val",
            }
        else:
            scenes = ProceduralScenes(split=args.split, seed=args.seed, count=args.count, height=h, width=w)
            dataset_info = {
                "source": "procedural",
                "split": args.split,
                "seed": args.seed,
                "count": args.count,
            }
        camvid = CamVidScenes(args.camvid, split="val", height=h, width=w) if args.camvid else None
        if args.camvid_grid and camvid is None:
            raise DataConfigError("--camvid-grid needs --camvid ROOT")
        measured = read_measured_frames(args.realdepth) if args.realdepth else None
    except (CheckpointError, DataConfigError) as error:
        print(f"scene-eval: error: {error}", file=sys.stderr)
        return 2
    metrics = evaluate(model, scenes, batch_size=args.batch_size, workers=args.workers, progress=True)
    report = {
        "checkpoint": str(args.checkpoint),
        "step": state["step"],
        "dataset": dataset_info | {"height": h, "width": w},
        "sigma": sigma,
        **metrics,
    }
    if camvid is not None:
        report["camvid"] = {"root": str(args.camvid), "split": "val"} | evaluate_camvid(
            model, camvid, batch_size=args.batch_size, progress=True
        )
        if args.camvid_grid:
            args.camvid_grid.parent.mkdir(parents=True, exist_ok=True)
            camvid_prediction_grid(model, camvid).save(args.camvid_grid)
    if args.batchnorm_check:
        batch = evaluate(BatchStatistics(model), scenes, batch_size=args.batch_size, workers=args.workers)
        keys = ("semantic_miou", "instance_mean_error_px", "inverse_depth_mean_error")
        report["batchnorm_check"] = {
            "running_statistics": {k: metrics[k] for k in keys},
            "batch_statistics": {k: batch[k] for k in keys},
        }
    if measured is not None:
        report["realdepth"] = {"root": str(args.realdepth)} | evaluate_real_depth(model, measured, h, w)
    if not args.cityscapes and args.baseline_scenes:
        # The training split and seed of the checkpoint, so the constants are what a
        # model could have learned without looking at an image.
        train_scenes = ProceduralScenes(
            split="train", seed=config.data.seed, count=args.baseline_scenes, height=h, width=w
        )
        report["baselines"] = baseline_metrics(train_scenes, scenes, batch_size=args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    grid_path = args.grid or args.out.with_suffix(".png")
    prediction_grid(model, scenes).save(grid_path)
    print(
        f"mIoU {metrics['semantic_miou']:.1f}% ({metrics['semantic_miou_labelled']:.1f}% over the labelled "
        f"classes)  instance error {metrics['instance_mean_error_px']:.2f} px  "
        f"inverse-depth error {metrics['inverse_depth_mean_error']:.4f} 1/m  -> {args.out}, {grid_path}"
    )
    if "camvid" in report:
        scores = report["camvid"]
        per_class = "  ".join(
            f"{k} {v:.1f}" for k, v in scores["camvid_iou_per_class"].items() if v is not None
        )
        print(f"CamVid val ({scores['frames']} frames): mIoU {scores['camvid_miou']:.1f}%  [{per_class}]")
    if "batchnorm_check" in report:
        running, batch = (
            report["batchnorm_check"]["running_statistics"],
            report["batchnorm_check"]["batch_statistics"],
        )
        print(
            "batch norm check, running / batch statistics: "
            + "  ".join(f"{k} {running[k]:.4g} / {batch[k]:.4g}" for k in running)
        )
    if "realdepth" in report:
        real = report["realdepth"]
        model_scores, flat = real["model"], real["constant_depth"]
        print(
            f"real depth ({real['frames']} frames): AbsRel {model_scores['abs_rel']:.3f} "
            f"(constant {flat['abs_rel']:.3f})  delta<1.25 {model_scores['delta1']:.3f} "
            f"(constant {flat['delta1']:.3f})  rank correlation {model_scores['spearman']:.3f}"
        )
    if "baselines" in report:
        base = report["baselines"]
        print(
            f"trivial baselines: mIoU {base['semantic_miou']:.1f}%  "
            f"instance error {base['instance_mean_error_px']:.2f} px  "
            f"inverse-depth error {base['inverse_depth_mean_error']:.4f} 1/m"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
