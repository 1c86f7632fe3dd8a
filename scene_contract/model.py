"""The ONNX contract between export and service: tensor names, layouts and the model card.

An exported model has one input and four outputs (N images of H x W pixels):

=====================  =========  ================  ==============================================
name                   dtype      shape             meaning
=====================  =========  ================  ==============================================
``image``              uint8      [N, H, W, 3]      RGB; normalisation happens inside the graph
``semantic``           uint8      [N, H, W]         train id of the most likely class (argmax)
``semantic_confidence`` float32   [N, H, W]         softmax probability of that class
``instance_offsets``   float32    [N, 2, H, W]      pixels, (dy, dx) from each pixel to its
                                                    instance's centroid
``inverse_depth``      float32    [N, 1, H, W]      1/m; 0 = infinitely far (sky)
=====================  =========  ================  ==============================================

N is dynamic. H and W are dynamic too unless the card's ``input.fixed_size`` is true:
then the graph holds its resampling sizes as constants and is valid at exactly the
card's ``input.height`` x ``input.width``. Dynamic H and W should be multiples of
``spatial_multiple`` (the backbone's output stride) so features align with pixels. The
service resizes every image to the size recorded in the card, with the card's
``input.resize`` filter, so it serves both kinds alike.

The model card is JSON in the ONNX metadata under ``METADATA_KEY``: everything a
consumer needs to read the outputs (the class table and its colours, each task's σ,
the input size and how to resize to it). This module needs only the standard library,
so the service can import it without torch or the training code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

INPUT_NAME = "image"
SEMANTIC = "semantic"
SEMANTIC_CONFIDENCE = "semantic_confidence"
INSTANCE_OFFSETS = "instance_offsets"
INVERSE_DEPTH = "inverse_depth"
OUTPUT_NAMES: tuple[str, ...] = (SEMANTIC, SEMANTIC_CONFIDENCE, INSTANCE_OFFSETS, INVERSE_DEPTH)

METADATA_KEY = "scene_mtl.model_card"
CARD_SCHEMA = "scene-mtl/model-card-v1"
TASKS: tuple[str, ...] = ("semantic", "instance", "depth")
MAX_IR_VERSION = 10  # what every onnxruntime release since 1.16 loads
# Next to the model file, a folder of PNGs at the input size for people to try the model
# on (scene-export writes them; the service's demo page serves them).
SAMPLES_DIR = "samples"
# How images are brought to the card's input size. Cards written before the field
# existed were all trained on bilinear resizes.
RESIZE_FILTERS: tuple[str, ...] = ("bilinear", "nearest")
DEFAULT_RESIZE = "bilinear"


class ModelCardError(ValueError):
    """The model card is missing or lacks a required field; the message names it."""


@dataclass(frozen=True)
class ClassInfo:
    name: str
    train_id: int
    color: tuple[int, int, int]
    is_thing: bool


@dataclass(frozen=True)
class TaskUncertainty:
    """A task's homoscedastic uncertainty: σ and s = log σ².

    ``learned`` is False when σ only restates a fixed loss weight (σ = sqrt(c / w)),
    None when the card does not say.
    """

    sigma: float
    log_variance: float
    learned: bool | None = None


@dataclass(frozen=True)
class ModelCard:
    """What a model file says about itself; `raw` keeps every field, known or not."""

    name: str
    version: str
    backbone: str
    input_height: int
    input_width: int
    spatial_multiple: int
    resize: str
    # True: the graph is valid at exactly input_height x input_width (sizes inside it
    # are constants); every image must be resized to that size.
    fixed_size: bool
    precision: str
    classes: tuple[ClassInfo, ...]
    ignore_index: int
    task_uncertainty: dict[str, TaskUncertainty]
    weighting: str
    metrics: dict[str, Any]
    raw: dict[str, Any]

    @property
    def thing_ids(self) -> tuple[int, ...]:
        return tuple(c.train_id for c in self.classes if c.is_thing)

    @property
    def class_names(self) -> dict[int, str]:
        """Train id → class name."""
        return {c.train_id: c.name for c in self.classes}

    def to_json(self) -> str:
        return json.dumps(self.raw, indent=2, sort_keys=True)


def parse_model_card(text: str | None) -> ModelCard:
    """Parse and check the card's JSON; raise `ModelCardError` naming what is wrong."""
    if not text:
        raise ModelCardError(f"the model has no {METADATA_KEY!r} metadata entry; export it with scene-export")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelCardError(f"{METADATA_KEY} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ModelCardError(f"{METADATA_KEY} must be a JSON object")
    if raw.get("schema") != CARD_SCHEMA:
        raise ModelCardError(f"model card schema {raw.get('schema')!r}, expected {CARD_SCHEMA!r}")

    def field(path: str, kind: type | tuple[type, ...]) -> Any:
        node: Any = raw
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ModelCardError(f"model card lacks {path}")
            node = node[part]
        if not isinstance(node, kind) or (
            kind is not bool and isinstance(node, bool) and kind in (int, float)
        ):
            raise ModelCardError(f"model card field {path} has the wrong type: {node!r}")
        return node

    classes = []
    for i, entry in enumerate(field("classes", list)):
        try:
            classes.append(
                ClassInfo(
                    name=str(entry["name"]),
                    train_id=int(entry["train_id"]),
                    color=(int(entry["color"][0]), int(entry["color"][1]), int(entry["color"][2])),
                    is_thing=bool(entry["is_thing"]),
                )
            )
        except (KeyError, TypeError, ValueError, IndexError):
            raise ModelCardError(f"model card classes[{i}] is malformed: {entry!r}") from None
    uncertainty = {}
    for task in TASKS:
        sigma = float(field(f"task_uncertainty.{task}.sigma", (int, float)))
        log_variance = float(field(f"task_uncertainty.{task}.log_variance", (int, float)))
        if not (math.isfinite(sigma) and sigma > 0):
            raise ModelCardError(f"model card task_uncertainty.{task}.sigma must be positive, got {sigma}")
        learned = field(f"task_uncertainty.{task}", dict).get("learned")
        if learned is not None and not isinstance(learned, bool):
            raise ModelCardError(f"model card task_uncertainty.{task}.learned must be true or false")
        uncertainty[task] = TaskUncertainty(sigma, log_variance, learned)
    fixed_size = field("input", dict).get("fixed_size", False)
    if not isinstance(fixed_size, bool):
        raise ModelCardError(f"model card input.fixed_size must be true or false, got {fixed_size!r}")
    resize = field("input", dict).get("resize", DEFAULT_RESIZE)
    if resize not in RESIZE_FILTERS:
        raise ModelCardError(
            f"model card input.resize is {resize!r}; known filters: {', '.join(RESIZE_FILTERS)}"
        )
    return ModelCard(
        name=field("name", str),
        version=field("version", str),
        backbone=field("backbone", str),
        input_height=field("input.height", int),
        input_width=field("input.width", int),
        spatial_multiple=field("input.spatial_multiple", int),
        resize=resize,
        fixed_size=fixed_size,
        precision=field("precision", str),
        classes=tuple(classes),
        ignore_index=field("ignore_index", int),
        task_uncertainty=uncertainty,
        weighting=field("weighting", str),
        metrics=field("metrics", dict),
        raw=raw,
    )
