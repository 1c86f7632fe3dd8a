"""The model card: what an exported model says about itself, as one typed object.

The exporter builds a `ModelCard` from the checkpoint and writes ``card.to_json()``
into the ONNX metadata under ``METADATA_KEY`` (and next to the model file); the
service reads it back with ``ModelCard.from_json``, which checks every field and
raises `ModelCardError` naming the first one that is missing or malformed. Both sides
import these classes, so the card's format is written here and nowhere else.

Each task's uncertainty is stored as s = log σ², the quantity training optimises;
σ = exp(s / 2) is a property. The JSON carries both, as it always has.

Cards written before a field existed still load: ``input.resize`` is then
``"bilinear"`` (all such models were trained on bilinear resizes),
``input.fixed_size`` false, ``pretrained`` null (none recorded), and ``training.data_mix`` /
``training.data_terms`` unknown (``None``, and left out of the JSON again).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from scene_contract.card_reading import CardObject
from scene_contract.card_reading import ModelCardError as ModelCardError
from scene_contract.card_training import SemanticCalibration as SemanticCalibration
from scene_contract.card_training import TrainingInfo as TrainingInfo
from scene_contract.card_training import TrainingStage as TrainingStage
from scene_contract.model import (
    CARD_SCHEMA,
    DEFAULT_RESIZE,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_DESCRIPTIONS,
    RESIZE_FILTERS,
    TASKS,
)

# How far a card's σ may stray from exp(s / 2), relative, before the two disagree: every
# exporter wrote one from the other in float64 (earlier ones s = 2 log σ, this one
# σ = exp(s / 2)), so they agree to rounding and any real difference is a corrupted card.
SIGMA_TOLERANCE = 1e-9


@dataclass(frozen=True)
class InputSpec:
    """The model's one input: ``uint8 [N, H, W, 3]`` RGB, normalised inside the graph.

    Attributes:
        height, width: pixels every image is resized to (the training resolution).
        spatial_multiple: the backbone's output stride; dynamic sizes should be multiples of it.
        resize: the filter training resized its frames with (`RESIZE_FILTERS`).
        fixed_size: True when the graph is valid at exactly ``height`` x ``width`` (sizes
            inside it are constants), so every image must be resized to that size.
    """

    height: int
    width: int
    spatial_multiple: int
    resize: str = DEFAULT_RESIZE
    fixed_size: bool = False
    name: str = INPUT_NAME
    dtype: str = "uint8"
    layout: str = "NHWC"
    color: str = "RGB"
    normalisation: str = "inside the graph"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "layout": self.layout,
            "color": self.color,
            "height": self.height,
            "width": self.width,
            "spatial_multiple": self.spatial_multiple,
            "fixed_size": self.fixed_size,
            "resize": self.resize,
            "normalisation": self.normalisation,
        }

    @classmethod
    def _read(cls, node: CardObject) -> InputSpec:
        resize = node.get("resize", str, DEFAULT_RESIZE)
        if resize not in RESIZE_FILTERS:
            raise ModelCardError(
                f"model card input.resize is {resize!r}; known filters: {', '.join(RESIZE_FILTERS)}"
            )
        return cls(
            height=node.get("height", int),
            width=node.get("width", int),
            spatial_multiple=node.get("spatial_multiple", int),
            resize=resize,
            fixed_size=node.flag("fixed_size", False),
            name=node.get("name", str, INPUT_NAME),
            dtype=node.get("dtype", str, cls.dtype),
            layout=node.get("layout", str, cls.layout),
            color=node.get("color", str, cls.color),
            normalisation=node.get("normalisation", str, cls.normalisation),
        )


@dataclass(frozen=True)
class ClassInfo:
    """One semantic class.

    Attributes:
        name: lower-case class name, e.g. ``"car"``.
        train_id: index of the class in the model's output channels.
        cityscapes_id: the class's ``labelIds`` value in Cityscapes ground truth
            (``None``: a card that does not say).
        color: RGB colour used for visualisations (the Cityscapes palette).
        is_thing: countable objects that get instance ids (person, car, ...).
    """

    name: str
    train_id: int
    cityscapes_id: int | None
    color: tuple[int, int, int]
    is_thing: bool

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "train_id": self.train_id,
            "color": list(self.color),
            "is_thing": self.is_thing,
        }
        if self.cityscapes_id is not None:
            entry["cityscapes_id"] = self.cityscapes_id
        return entry

    @classmethod
    def _read(cls, entry: Any, index: int) -> ClassInfo:
        try:
            color = entry["color"]
            cityscapes_id = entry.get("cityscapes_id")
            return cls(
                name=str(entry["name"]),
                train_id=int(entry["train_id"]),
                cityscapes_id=None if cityscapes_id is None else int(cityscapes_id),
                color=(int(color[0]), int(color[1]), int(color[2])),
                is_thing=bool(entry["is_thing"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError, IndexError):
            raise ModelCardError(f"model card classes[{index}] is malformed: {entry!r}") from None


class TaskUncertaintyJSON(TypedDict):
    """A task's uncertainty as the card's JSON (and /predict's answer) spells it."""

    sigma: float
    log_variance: float
    learned: bool | None


@dataclass(frozen=True)
class TaskUncertainty:
    """A task's homoscedastic uncertainty, stored as s = log σ² (what training optimises).

    ``learned`` is False when σ only restates a fixed loss weight (σ = sqrt(c / w)),
    None when the card does not say.
    """

    log_variance: float
    learned: bool | None = None

    @property
    def sigma(self) -> float:
        """σ = exp(s / 2)."""
        return math.exp(self.log_variance / 2)

    def to_dict(self) -> TaskUncertaintyJSON:
        return {"sigma": self.sigma, "log_variance": self.log_variance, "learned": self.learned}

    @classmethod
    def _read(cls, node: CardObject) -> TaskUncertainty:
        log_variance = float(node.get("log_variance", (int, float)))
        if not math.isfinite(log_variance):
            raise ModelCardError(
                f"model card {node.where('log_variance')} must be finite, got {log_variance}"
            )
        uncertainty = cls(log_variance, node.flag("learned", None))
        # Every card so far also spells out σ; it must be the σ of s.
        sigma = float(node.get("sigma", (int, float), uncertainty.sigma))
        if not math.isclose(sigma, uncertainty.sigma, rel_tol=SIGMA_TOLERANCE):
            raise ModelCardError(
                f"model card {node.where('sigma')} is {sigma}, but its log_variance {log_variance} "
                f"gives σ = {uncertainty.sigma}"
            )
        return uncertainty


@dataclass(frozen=True)
class PretrainedWeights:
    """The published weights a model started from, identified by the file's sha256."""

    sha256: str
    name: str
    source: str | None = None
    licence: str | None = None

    def to_dict(self) -> dict[str, str]:
        entry = {"sha256": self.sha256, "name": self.name}
        if self.source is not None:
            entry["source"] = self.source
        if self.licence is not None:
            entry["licence"] = self.licence
        return entry

    @classmethod
    def _read(cls, node: CardObject) -> PretrainedWeights:
        return cls(
            sha256=node.get("sha256", str),
            name=node.get("name", str),
            source=node.get("source", str, None),
            licence=node.get("licence", str, None),
        )


@dataclass(frozen=True)
class ModelCard:
    """What a model file says about itself: everything a consumer needs to read its outputs.

    Attributes:
        name, version: what the exporter was told to call the model.
        backbone: the feature extractor, e.g. ``"espnetv2"``.
        precision: how the weights are stored, e.g. ``"fp32-fp16weights"`` or ``"int8"``.
        input: the input tensor and the size and filter to resize images with.
        classes: the class table, in train-id order.
        ignore_index: the train id of unlabelled pixels.
        task_uncertainty: task -> its uncertainty, for every task in ``TASKS``.
        weighting: the loss weighting strategy training used.
        pretrained: the published weights training started from (``None``: none recorded).
        metrics: the evaluation report (free-form; the demo page reads some keys).
        training: how the model was trained.
        exported_at: ISO 8601 time of the export.
        versions: package -> version of the software that exported it.
        outputs: output tensor name -> what it holds.
    """

    name: str
    version: str
    backbone: str
    precision: str
    input: InputSpec
    classes: tuple[ClassInfo, ...]
    ignore_index: int
    task_uncertainty: Mapping[str, TaskUncertainty]
    weighting: str
    pretrained: PretrainedWeights | None
    metrics: Mapping[str, Any]
    training: TrainingInfo
    exported_at: str
    versions: Mapping[str, str]
    outputs: Mapping[str, str] = field(default_factory=lambda: dict(OUTPUT_DESCRIPTIONS))

    @property
    def thing_ids(self) -> tuple[int, ...]:
        return tuple(c.train_id for c in self.classes if c.is_thing)

    @property
    def class_names(self) -> dict[int, str]:
        """Train id → class name."""
        return {c.train_id: c.name for c in self.classes}

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-ready dicts and lists, keyed as the ONNX metadata holds it."""
        return {
            "schema": CARD_SCHEMA,
            "name": self.name,
            "version": self.version,
            "backbone": self.backbone,
            "precision": self.precision,
            "input": self.input.to_dict(),
            "outputs": dict(self.outputs),
            "classes": [c.to_dict() for c in self.classes],
            "ignore_index": self.ignore_index,
            "task_uncertainty": {task: u.to_dict() for task, u in self.task_uncertainty.items()},
            "weighting": self.weighting,
            "pretrained": None if self.pretrained is None else self.pretrained.to_dict(),
            "metrics": dict(self.metrics),
            "training": self.training.to_dict(),
            "exported_at": self.exported_at,
            "versions": dict(self.versions),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The card's JSON, keys sorted (``indent=None``: on one line, as the metadata holds it)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ModelCard:
        """Parse and check the card's JSON; raise `ModelCardError` naming what is wrong."""
        if not text:
            raise ModelCardError(
                f"the model has no {METADATA_KEY!r} metadata entry; export it with scene-export"
            )
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelCardError(f"{METADATA_KEY} is not valid JSON: {error}") from None
        if not isinstance(raw, dict):
            raise ModelCardError(f"{METADATA_KEY} must be a JSON object")
        if raw.get("schema") != CARD_SCHEMA:
            raise ModelCardError(f"model card schema {raw.get('schema')!r}, expected {CARD_SCHEMA!r}")
        card = CardObject(raw, "")
        uncertainty = card.child("task_uncertainty")
        pretrained = card.get("pretrained", (dict, type(None)), None)
        return cls(
            name=card.get("name", str),
            version=card.get("version", str),
            backbone=card.get("backbone", str),
            precision=card.get("precision", str),
            input=InputSpec._read(card.child("input")),
            classes=tuple(ClassInfo._read(entry, i) for i, entry in enumerate(card.get("classes", list))),
            ignore_index=card.get("ignore_index", int),
            task_uncertainty={task: TaskUncertainty._read(uncertainty.child(task)) for task in TASKS},
            weighting=card.get("weighting", str),
            pretrained=None if pretrained is None else PretrainedWeights._read(card.child("pretrained")),
            metrics=card.get("metrics", dict),
            training=TrainingInfo._read(card.child("training")),
            exported_at=card.get("exported_at", str),
            versions=card.strings("versions"),
            outputs=card.strings("outputs") if "outputs" in raw else dict(OUTPUT_DESCRIPTIONS),
        )
