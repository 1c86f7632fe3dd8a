"""The model card: one typed object that writes the JSON the exporter ships and reads it
back, cards from earlier exporters included, refusing a broken one with the field named."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import pytest

from scene_contract.card import (
    ClassInfo,
    InputSpec,
    ModelCard,
    ModelCardError,
    PretrainedWeights,
    SemanticCalibration,
    TaskUncertainty,
    TrainingInfo,
    TrainingStage,
)
from scene_contract.model import CARD_SCHEMA, METADATA_KEY, OUTPUT_DESCRIPTIONS, TASKS

BUNDLED = Path(__file__).resolve().parents[2] / "models" / "default"


def as_read(written: dict[str, Any]) -> dict[str, Any]:
    """What a card written as ``written`` says once read: the same, with the values of
    the fields it predates, and each σ recomputed from its s (equal to float rounding:
    exporters before this one wrote s = 2 log σ from σ)."""
    defaults = {"resize": "bilinear", "fixed_size": False}
    uncertainty = {
        task: entry | {"sigma": pytest.approx(entry["sigma"], rel=1e-12)}
        for task, entry in written["task_uncertainty"].items()
    }
    return written | {
        "input": defaults | written["input"],
        "pretrained": written.get("pretrained"),
        "task_uncertainty": uncertainty,
    }


def a_card(**changes: Any) -> ModelCard:
    """A card with every field set, as the exporter writes them; ``changes`` replace fields."""
    fields: dict[str, Any] = {
        "name": "street",
        "version": "3",
        "backbone": "espnetv2",
        "precision": "fp32",
        "input": InputSpec(height=320, width=640, spatial_multiple=32, resize="bilinear", fixed_size=True),
        "classes": (
            ClassInfo("road", 0, 7, (128, 64, 128), False),
            ClassInfo("car", 13, 26, (0, 0, 142), True),
        ),
        "ignore_index": 255,
        "task_uncertainty": {
            "semantic": TaskUncertainty(-0.5, learned=True),
            "instance": TaskUncertainty(1.25, learned=True),
            "depth": TaskUncertainty(-4.0, learned=True),
        },
        "weighting": "uncertainty",
        "pretrained": PretrainedWeights("ab" * 32, "ESPNetv2", source="a model zoo", licence="MIT"),
        "metrics": {"semantic_miou": 61.5, "semantic_iou_per_class": {"road": 95.0, "bus": None}},
        "training": TrainingInfo(
            steps=800,
            data_source="procedural",
            resolution=(320, 640),
            config_sha256="c" * 64,
            data_mix={"procedural": 0.5, "camvid": 0.5},
            data_terms=("procedural: no third-party terms", "CamVid: non-commercial"),
            earlier_stages=(
                TrainingStage("runs/street/last.pt", 800, "d" * 64, {"camvid": 0.625, "procedural": 0.375}),
                TrainingStage("runs/street_v4/last.pt", 600, "e" * 64, {"camvid": 0.5, "procedural": 0.5}),
            ),
            calibration=SemanticCalibration(
                {"fence": -1.0, "sky": 1.75}, "CamVid train (367 frames)", 70.8, 75.1
            ),
        ),
        "exported_at": "2026-12-04T21:00:00+00:00",
        "versions": {"scene_mtl": "0.1.0", "torch": "2.14.1"},
    }
    return ModelCard(**(fields | changes))


def card_json(**changes: Any) -> dict[str, Any]:
    """`a_card`'s JSON as a dict, to break on purpose."""
    raw: dict[str, Any] = json.loads(a_card(**changes).to_json())
    return raw


def test_a_card_reads_back_as_the_card_it_was() -> None:
    card = a_card()
    assert ModelCard.from_json(card.to_json()) == card
    assert ModelCard.from_json(card.to_json(indent=None)) == card  # as the ONNX metadata holds it


def test_the_json_has_the_keys_the_demo_page_and_clients_read() -> None:
    raw = card_json()
    assert raw["schema"] == CARD_SCHEMA
    assert raw["input"] == {
        "name": "image",
        "dtype": "uint8",
        "layout": "NHWC",
        "color": "RGB",
        "height": 320,
        "width": 640,
        "spatial_multiple": 32,
        "fixed_size": True,
        "resize": "bilinear",
        "normalisation": "inside the graph",
    }
    assert raw["classes"][1] == {
        "name": "car",
        "train_id": 13,
        "cityscapes_id": 26,
        "color": [0, 0, 142],
        "is_thing": True,
    }
    assert raw["outputs"] == OUTPUT_DESCRIPTIONS
    assert raw["training"]["resolution"] == [320, 640] and raw["training"]["data_mix"]["camvid"] == 0.5
    assert raw["pretrained"]["licence"] == "MIT"
    assert raw["metrics"]["semantic_iou_per_class"]["bus"] is None


def test_sigma_is_derived_from_the_stored_log_variance() -> None:
    uncertainty = TaskUncertainty(log_variance=2 * math.log(3.0), learned=False)
    assert uncertainty.sigma == pytest.approx(3.0)
    assert uncertainty.to_dict() == {
        "sigma": uncertainty.sigma,
        "log_variance": 2 * math.log(3.0),
        "learned": False,
    }
    assert card_json()["task_uncertainty"]["depth"] == {
        "sigma": math.exp(-2.0),
        "log_variance": -4.0,
        "learned": True,
    }


def test_class_lookups() -> None:
    card = a_card()
    assert card.thing_ids == (13,)
    assert card.class_names == {0: "road", 13: "car"}


def test_the_committed_card_of_the_previous_version_loads() -> None:
    text = (BUNDLED / "model.card.json").read_text()
    written = json.loads(text)
    card = ModelCard.from_json(text)
    assert card.name == written["name"] and card.version == written["version"]
    assert (card.input.height, card.input.width) == tuple(written["training"]["resolution"])
    assert len(card.classes) == 19 and card.class_names[13] == "car" and 13 in card.thing_ids
    for task in TASKS:
        assert card.task_uncertainty[task].learned is written["task_uncertainty"][task]["learned"]
        assert card.task_uncertainty[task].log_variance == written["task_uncertainty"][task]["log_variance"]
    assert card.metrics == written["metrics"]
    # Everything the file says comes back; fields it predates come back with what they stood for.
    assert card.to_dict() == as_read(written)


def test_the_bundled_onnx_files_card_loads_from_its_metadata() -> None:
    model = onnx.load(str(BUNDLED / "model.onnx"), load_external_data=False)
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    card = ModelCard.from_json(metadata[METADATA_KEY])
    assert card == ModelCard.from_json((BUNDLED / "model.card.json").read_text())


def test_a_card_with_the_version_3_fields_round_trips_exactly() -> None:
    written = json.loads((BUNDLED / "model.card.json").read_text())
    written["input"] |= {"fixed_size": True, "resize": "nearest"}
    written["pretrained"] = {"sha256": "ab" * 32, "name": "unrecorded weight file"}
    card = ModelCard.from_json(json.dumps(written))
    assert card.input.fixed_size and card.input.resize == "nearest"
    assert card.pretrained == PretrainedWeights("ab" * 32, "unrecorded weight file")
    assert card.to_dict() == as_read(written)
    assert set(card.to_dict()) == set(written) and set(card.to_dict()["input"]) == set(written["input"])


def test_a_card_from_before_the_data_mix_keeps_it_unknown() -> None:
    raw = card_json()
    del raw["training"]["data_mix"], raw["training"]["data_terms"], raw["classes"][0]["cityscapes_id"]
    card = ModelCard.from_json(json.dumps(raw))
    assert card.training.data_mix is None and card.training.data_terms is None
    assert card.classes[0].cityscapes_id is None
    assert card.to_dict() == raw


def test_the_card_tells_the_training_history_and_its_total_steps() -> None:
    raw = card_json()
    assert [stage["steps"] for stage in raw["training"]["earlier_stages"]] == [800, 600]
    assert a_card().training.total_steps == 800 + 600 + 800
    assert raw["training"]["calibration"]["semantic_logit_offsets"] == {"fence": -1.0, "sky": 1.75}
    unknown = TrainingStage("a checkpoint no longer there", None, None, None)
    training = replace(a_card().training, earlier_stages=(unknown,))
    assert training.total_steps is None  # not a sum that leaves a stage out
    assert ModelCard.from_json(a_card(training=training).to_json()).training == training
    del raw["training"]["earlier_stages"]  # a card from before the field: history unknown
    assert ModelCard.from_json(json.dumps(raw)).training.earlier_stages is None


def _without(path: str) -> dict[str, Any]:
    raw = card_json()
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node[part]
    del node[last]
    return raw


@pytest.mark.parametrize(
    "path",
    [
        "name",
        "version",
        "backbone",
        "precision",
        "input.height",
        "input.spatial_multiple",
        "classes",
        "ignore_index",
        "task_uncertainty",
        "task_uncertainty.instance",
        "task_uncertainty.depth.log_variance",
        "weighting",
        "metrics",
        "training",
        "training.config_sha256",
        "exported_at",
        "versions",
    ],
)
def test_a_missing_field_is_named(path: str) -> None:
    with pytest.raises(ModelCardError, match=f"^model card lacks {re.escape(path)}$"):
        ModelCard.from_json(json.dumps(_without(path)))


def _with(path: str, value: Any) -> str:
    raw = card_json()
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = value
    return json.dumps(raw)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("name", 3, "model card field name has the wrong type: 3"),
        ("input.height", 320.0, "model card field input.height has the wrong type: 320.0"),
        ("input.width", True, "model card field input.width has the wrong type: True"),
        ("ignore_index", "255", "model card field ignore_index has the wrong type: '255'"),
        ("metrics", [], "model card field metrics has the wrong type: []"),
        ("input.fixed_size", "yes", "model card input.fixed_size must be true or false, got 'yes'"),
        ("input.resize", "bicubic", "model card input.resize is 'bicubic'; known filters: bilinear, nearest"),
        (
            "task_uncertainty.semantic.learned",
            1,
            "model card task_uncertainty.semantic.learned must be true or false, got 1",
        ),
        (
            "task_uncertainty.depth.log_variance",
            "low",
            "model card field task_uncertainty.depth.log_variance has the wrong type: 'low'",
        ),
        (
            "task_uncertainty.depth.sigma",
            0.5,
            "model card task_uncertainty.depth.sigma is 0.5, but its log_variance -4.0 gives σ = 0.1353",
        ),
        ("classes", [{"name": "road"}], "model card classes[0] is malformed: {'name': 'road'}"),
        ("training.resolution", [320], "model card training.resolution must be [height, width], got [320]"),
        ("training.earlier_stages", [800], "model card training.earlier_stages must be a list of objects"),
        (
            "training.earlier_stages",
            [{"checkpoint": "a.pt", "steps": "800", "config_sha256": None, "data_mix": None}],
            "model card field training.earlier_stages[0].steps has the wrong type: '800'",
        ),
        (
            "training.calibration.semantic_logit_offsets.fence",
            "-1",
            "model card field training.calibration.semantic_logit_offsets.fence has the wrong type: '-1'",
        ),
        ("versions.torch", 2, "model card field versions.torch has the wrong type: 2"),
        ("pretrained", "ESPNetv2", "model card field pretrained has the wrong type: 'ESPNetv2'"),
        ("pretrained.sha256", None, "model card field pretrained.sha256 has the wrong type: None"),
    ],
)
def test_a_malformed_field_is_named(path: str, value: Any, message: str) -> None:
    with pytest.raises(ModelCardError) as raised:
        ModelCard.from_json(_with(path, value))
    assert str(raised.value).startswith(message)


def test_a_log_variance_that_is_not_finite_is_refused() -> None:
    with pytest.raises(
        ModelCardError, match=r"task_uncertainty\.depth\.log_variance must be finite, got inf"
    ):
        ModelCard.from_json(_with("task_uncertainty.depth.log_variance", math.inf))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, f"the model has no '{METADATA_KEY}' metadata entry"),
        ("", f"the model has no '{METADATA_KEY}' metadata entry"),
        ("{not json", f"{METADATA_KEY} is not valid JSON"),
        ("[1, 2]", f"{METADATA_KEY} must be a JSON object"),
        ('{"schema": "scene-mtl/model-card-v0"}', "model card schema 'scene-mtl/model-card-v0', expected"),
    ],
)
def test_no_card_or_not_a_card_is_refused(text: str | None, message: str) -> None:
    with pytest.raises(ModelCardError, match=message):
        ModelCard.from_json(text)
