"""Pictures of a model's predictions: rows of panels, the truth beside the prediction.

`scene-eval` writes them next to its metrics (``--grid``, ``--camvid-grid``), so a
score can be checked by eye.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageDraw
from torch import nn

from training.data.camvid import CamVidScenes
from training.data.classes import is_thing_table
from training.data.visualize import colorize_inverse_depth, colorize_semantic
from training.dataset import SceneSource, TaskDataset
from training.model import to_model_input


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
