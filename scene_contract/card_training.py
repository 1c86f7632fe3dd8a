"""The model card's ``training`` section: how the exported weights were trained.

A model may be trained in stages, each run starting from the last checkpoint of the
one before (``init_from``). ``steps``, ``data_mix`` and ``config_sha256`` describe the
last run, the one the checkpoint came from; ``earlier_stages`` lists the runs before
it, earliest first, so the whole history is on the card. Cards written before the
field existed read back with ``earlier_stages`` unknown (``None``). ``calibration`` holds
the per-class offsets ``scene-calibrate`` added to the semantic logits, if any.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scene_contract.card_reading import CardObject, ModelCardError


@dataclass(frozen=True)
class TrainingStage:
    """One run the exported model's run started from, directly or through others.

    Attributes:
        checkpoint: the checkpoint the next run started from, as its config named it.
        steps: optimiser steps of that run (``None``: the checkpoint could not be read
            when the history was recorded, so nothing more is known of it).
        config_sha256: sha256 of that run's configuration JSON (``None`` likewise).
        data_mix: source name -> share of each batch in that run (``None`` likewise).
    """

    checkpoint: str
    steps: int | None
    config_sha256: str | None
    data_mix: Mapping[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "steps": self.steps,
            "config_sha256": self.config_sha256,
            "data_mix": None if self.data_mix is None else dict(self.data_mix),
        }

    @classmethod
    def _read(cls, node: CardObject) -> TrainingStage:
        mix = node.get("data_mix", (dict, type(None)))
        return cls(
            checkpoint=node.get("checkpoint", str),
            steps=node.get("steps", (int, type(None))),
            config_sha256=node.get("config_sha256", (str, type(None))),
            data_mix=None if mix is None else _mix(node.child("data_mix")),
        )


@dataclass(frozen=True)
class SemanticCalibration:
    """Per-class offsets added to the semantic logits after training (``scene-calibrate``).

    Attributes:
        offsets: class name -> the offset added to its logit, for the classes fitted.
        fitted_on: the labelled frames they were fitted on, e.g. ``"CamVid train (367 frames)"``.
        miou_before, miou_after: mean IoU (percent) on those frames without and with them.
    """

    offsets: Mapping[str, float]
    fitted_on: str
    miou_before: float
    miou_after: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "semantic_logit_offsets": dict(self.offsets),
            "fitted_on": self.fitted_on,
            "miou_before": self.miou_before,
            "miou_after": self.miou_after,
        }

    @classmethod
    def _read(cls, node: CardObject) -> SemanticCalibration:
        return cls(
            offsets=_mix(node.child("semantic_logit_offsets")),
            fitted_on=node.get("fitted_on", str),
            miou_before=float(node.get("miou_before", (int, float))),
            miou_after=float(node.get("miou_after", (int, float))),
        )


@dataclass(frozen=True)
class TrainingInfo:
    """How the model was trained.

    Attributes:
        steps: optimiser steps of the checkpoint's own run (``None``: it did not say).
        data_source: the configured data source.
        resolution: ``(height, width)`` of the training frames.
        config_sha256: sha256 of the training configuration's JSON, as the exporting
            code read it (settings added after the run appear at their defaults).
        data_mix: source name -> share of each batch (``None``: a card from before the field).
        data_terms: one line per source saying what its terms mean for the weights.
        earlier_stages: the runs the checkpoint's run started from, earliest first
            (empty: it started from scratch or from published weights; ``None``: a card
            from before the field).
        calibration: the semantic offsets fitted after training (``None``: none).
    """

    steps: int | None
    data_source: str
    resolution: tuple[int, int]
    config_sha256: str
    data_mix: Mapping[str, float] | None = None
    data_terms: tuple[str, ...] | None = None
    earlier_stages: tuple[TrainingStage, ...] | None = None
    calibration: SemanticCalibration | None = None

    @property
    def total_steps(self) -> int | None:
        """Optimiser steps over every recorded stage (``None`` if any stage's are unknown)."""
        counts = [self.steps] + [stage.steps for stage in self.earlier_stages or ()]
        return None if None in counts else sum(c for c in counts if c is not None)

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "steps": self.steps,
            "data_source": self.data_source,
            "resolution": list(self.resolution),
            "config_sha256": self.config_sha256,
        }
        if self.data_mix is not None:
            entry["data_mix"] = dict(self.data_mix)
        if self.data_terms is not None:
            entry["data_terms"] = list(self.data_terms)
        if self.earlier_stages is not None:
            entry["earlier_stages"] = [stage.to_dict() for stage in self.earlier_stages]
        if self.calibration is not None:
            entry["calibration"] = self.calibration.to_dict()
        return entry

    @classmethod
    def _read(cls, node: CardObject) -> TrainingInfo:
        resolution = node.get("resolution", list)
        if len(resolution) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in resolution
        ):
            raise ModelCardError(
                f"model card {node.where('resolution')} must be [height, width], got {resolution!r}"
            )
        terms = node.get("data_terms", list, None)
        if terms is not None and not all(isinstance(line, str) for line in terms):
            raise ModelCardError(f"model card {node.where('data_terms')} must be a list of strings")
        return cls(
            steps=node.get("steps", (int, type(None))),
            data_source=node.get("data_source", str),
            resolution=(resolution[0], resolution[1]),
            config_sha256=node.get("config_sha256", str),
            data_mix=_mix(node.child("data_mix")) if "data_mix" in node.value else None,
            data_terms=None if terms is None else tuple(terms),
            earlier_stages=_stages(node),
            calibration=SemanticCalibration._read(node.child("calibration"))
            if node.value.get("calibration") is not None
            else None,
        )


def _mix(node: CardObject) -> dict[str, float]:
    """A JSON object of numbers (a data mix, offsets per class)."""
    return {name: float(node.get(name, (int, float))) for name in node.value}


def _stages(node: CardObject) -> tuple[TrainingStage, ...] | None:
    stages = node.get("earlier_stages", list, None)
    if stages is None:
        return None
    where = node.where("earlier_stages")
    if not all(isinstance(stage, dict) for stage in stages):
        raise ModelCardError(f"model card {where} must be a list of objects")
    return tuple(TrainingStage._read(CardObject(stage, f"{where}[{i}]")) for i, stage in enumerate(stages))
