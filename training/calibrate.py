"""``scene-calibrate``: per-class offsets on the semantic logits, fitted for mean IoU on real frames.

Class-weighted cross-entropy (``loss.class_weighting``) trains the network as if each
class ``c`` were ``w_c`` times as common as it is, which raises its logits by about
``log w_c``. That is what lifts the thin classes' recall, and it overshoots: measured on
version 4 of the bundled model on CamVid's validation frames, fence (weight 4.6 against
building's 0.6) was predicted on 98% of the true fence pixels, but a third of the pixels
it was predicted on were building. Subtracting every ``log w_c`` would be right for
pixel accuracy; for mean IoU the best offsets lie in between and differ per class.

This module fits them on labelled real frames, the CamVid *training* frames by default
(the frames the model learned from, never the validation frames it is scored on), by
coordinate ascent on the mean IoU in the data's own classes: each class's offset in turn
moves by ±1, ±0.5 or ±0.25 while that raises the score, until a sweep over every class
gains less than 0.05 points.
Only classes the data labels get an offset; the others keep theirs (0), as there is
nothing to fit them on. The offsets are added to the bias of the semantic output layer,
so the checkpoint, the exported graph and the service all carry them with no new code.
The checkpoint records them with the scores before and after, and its validation
metrics (what the model card shows) are measured again with them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from training.checkpoint import (
    CheckpointError,
    model_from_checkpoint,
    save_checkpoint,
    stages_before,
    weighting_from_checkpoint,
)
from training.data.camvid import (
    CAMVID_CLASSES,
    CAMVID_VOID,
    CamVidScenes,
    camvid_to_train_id,
    train_id_to_camvid,
)
from training.data.classes import CLASSES
from training.data.sample import DataConfigError
from training.dataset import build_scenes
from training.evaluate import evaluate
from training.model import SceneNetwork, semantic_output_layer
from training.real_frames import camvid_logits

# Offset moves tried on each class, largest first.
MOVES = (1.0, -1.0, 0.5, -0.5, 0.25, -0.25)
MAX_SWEEPS = 6
# A sweep that raises the mean IoU by less than this (points) is the last.
MIN_SWEEP_GAIN = 0.05


@dataclass
class LabelledPixels:
    """Logits of a model on labelled frames, pixel by pixel, with the data's own labels.

    Attributes:
        logits: ``float16 [P, C]``, the model's logits at the pixels kept.
        labels: ``int64 [P]``, each pixel's class in the data's own class list.
        to_data: ``int64 [C]``, the data class each model class is scored as.
        classes: the number of classes the data labels.
    """

    logits: Tensor
    labels: Tensor
    to_data: Tensor
    classes: int

    def mean_iou(self, offsets: Tensor) -> tuple[float, Tensor]:
        """Mean IoU (percent) over the data's classes with ``offsets`` added, and each class's IoU."""
        predicted = self.to_data[(self.logits.float() + offsets).argmax(1)]
        pairs = self.labels * self.classes + predicted
        confusion = torch.bincount(pairs, minlength=self.classes**2).view(self.classes, self.classes)
        hits = confusion.diag().double()
        union = confusion.sum(0).double() + confusion.sum(1).double() - hits
        iou = torch.where(union > 0, hits / union.clamp(min=1), torch.nan) * 100
        return float(iou.nanmean()), iou


def collect_camvid(
    model: SceneNetwork, scenes: CamVidScenes, pixel_step: int = 2, progress: bool = True
) -> LabelledPixels:
    """The model's logits on every frame of ``scenes``, as the service sends them, at the labels' size.

    The logits come from `training.real_frames.camvid_logits`, as
    `training.real_frames.evaluate_camvid` scores them; every ``pixel_step``-th labelled
    pixel in each direction is kept.
    """
    model.eval()
    logits, labels = [], []
    for full, target in camvid_logits(model, scenes, progress=progress):
        full, target = full[:, ::pixel_step, ::pixel_step], target[::pixel_step, ::pixel_step]
        kept = target != CAMVID_VOID
        logits.append(full.permute(1, 2, 0)[kept].half())
        labels.append(target[kept])
    to_data = torch.from_numpy(train_id_to_camvid().astype(np.int64))[: len(CLASSES)]
    return LabelledPixels(torch.cat(logits), torch.cat(labels), to_data, len(CAMVID_CLASSES))


def fit_offsets(
    pixels: LabelledPixels, tunable: Sequence[int], say: Callable[[str], None] = print
) -> tuple[Tensor, float, float]:
    """Offsets ``float32 [C]`` for ``tunable`` classes by coordinate ascent; the mIoU before and after."""
    offsets = torch.zeros(pixels.logits.shape[1])
    before = best = pixels.mean_iou(offsets)[0]
    for sweep in range(1, MAX_SWEEPS + 1):
        start = best
        for c in tunable:
            for move in MOVES:
                trial = offsets.clone()
                trial[c] += move
                score = pixels.mean_iou(trial)[0]
                if score > best + 1e-6:
                    best, offsets = score, trial
        say(f"sweep {sweep}: mIoU {best:.2f}")
        if best < start + MIN_SWEEP_GAIN:
            break
    return offsets, before, best


def apply_offsets(model: SceneNetwork, offsets: Tensor) -> None:
    """Add ``offsets`` to the bias of the semantic output layer (the logits before upsampling)."""
    layer = semantic_output_layer(model)
    assert layer.bias is not None
    with torch.no_grad():
        layer.bias += offsets.to(layer.bias)


def camvid_tunable() -> list[int]:
    """Model classes that CamVid labels: the only ones its frames can fit an offset for."""
    return sorted({int(t) for t in camvid_to_train_id()[: len(CAMVID_CLASSES)]})


def calibrate(
    checkpoint: Path, camvid_root: Path, out: Path, *, split: str = "train", pixel_step: int = 2
) -> dict[str, Any]:
    """Fit offsets on the CamVid ``split`` for ``checkpoint``'s model; write ``out``; return the record."""
    model, state = model_from_checkpoint(checkpoint)
    if state.get("calibration"):
        raise CheckpointError(f"{checkpoint} is calibrated already; calibrate the checkpoint it came from")
    config = state["config"]
    scenes = CamVidScenes(camvid_root, split=split, height=config.data.height, width=config.data.width)
    pixels = collect_camvid(model, scenes, pixel_step)
    offsets, before, after = fit_offsets(pixels, camvid_tunable())
    apply_offsets(model, offsets)
    # The checkpoint's validation metrics (which the model card shows) are the model's as
    # it is now: validated again, on the config's validation split, with the offsets.
    data = replace(config.data, camvid_root=str(camvid_root))
    metrics = evaluate(model, build_scenes(data, "val"), batch_size=config.batch_size, progress=True)
    names = [c.name for c in CLASSES]
    record = {
        "semantic_logit_offsets": {names[c]: float(offsets[c]) for c in camvid_tunable()},
        "fitted_on": f"CamVid {split} ({len(scenes)} frames)",
        "miou_before": before,
        "miou_after": after,
    }
    save_checkpoint(
        out,
        config=config,
        step=state["step"],
        model=model,
        weighting=weighting_from_checkpoint(state),
        metrics=metrics,
        earlier_stages=stages_before(state),
        calibration=record,
    )
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scene-calibrate",
        description="Fit per-class offsets on a checkpoint's semantic logits for mean IoU on labelled "
        "CamVid frames (the training frames by default) and write a checkpoint that carries them.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--camvid", type=Path, required=True, help="CamVid root (docs/training.md)")
    parser.add_argument("--out", type=Path, required=True, help="the calibrated checkpoint to write")
    parser.add_argument("--split", default="train", help="CamVid split to fit on (default train)")
    parser.add_argument(
        "--pixel-step", type=int, default=2, help="keep every k-th pixel each way (default 2)"
    )
    args = parser.parse_args(argv)
    if args.pixel_step < 1:
        parser.error("--pixel-step must be at least 1")
    if args.out.resolve() == args.checkpoint.resolve():
        parser.error("--out must differ from --checkpoint: the uncalibrated checkpoint is kept")
    try:
        record = calibrate(
            args.checkpoint, args.camvid, args.out, split=args.split, pixel_step=args.pixel_step
        )
    except (CheckpointError, DataConfigError, FileNotFoundError) as error:
        print(f"scene-calibrate: {error}", file=sys.stderr)
        return 2
    offsets = ", ".join(f"{k} {v:+.2f}" for k, v in record["semantic_logit_offsets"].items() if v)
    print(
        f"{record['fitted_on']}: mIoU {record['miou_before']:.2f} -> {record['miou_after']:.2f}; "
        f"offsets {offsets or 'none'}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
