"""The exporter's model card, built from a checkpoint's contents without tracing a graph:
s straight from the checkpoint's loss weighting, `learned` from the strategy itself, and
the same keys the card has always had."""

from __future__ import annotations

import math
from typing import Any

import pytest

from model_export.card import PRETRAINED_SOURCES, build_model_card
from scene_contract.card import ModelCard, PretrainedWeights
from scene_contract.model import TASKS
from training.checkpoint import CheckpointError
from training.config import LossConfig, TrainConfig
from training.model import ModelConfig, SceneNetwork, build_model
from training.weighting import build_weighting_from_config


@pytest.fixture(scope="module")
def model() -> SceneNetwork:
    return build_model(ModelConfig(aspp_channels=8, decoder_channels=8))


def checkpoint_state(loss: LossConfig, **model_changes: Any) -> dict[str, Any]:
    """What `training.checkpoint.load_checkpoint` returns for a run with ``loss``, without its weights."""
    config = TrainConfig(loss=loss, model=ModelConfig(aspp_channels=8, decoder_channels=8, **model_changes))
    return {
        "config": config,
        "step": 40,
        "weighting": build_weighting_from_config(loss).state_dict(),
        # Older checkpoints also kept σ among the metrics; the card has its own field for it.
        "metrics": {"semantic_miou": 12.5, "sigma": {"semantic": 1.0}},
    }


def card_of(state: dict[str, Any], model: SceneNetwork) -> ModelCard:
    return build_model_card(state, model, precision="fp32", name="unit", version="1")


def test_learned_s_is_the_checkpoints_own_and_an_absent_task_is_a_placeholder(model: SceneNetwork) -> None:
    loss = LossConfig(strategy="uncertainty", tasks=["semantic", "depth"], init_log_variance=-0.7)
    card = card_of(checkpoint_state(loss), model)
    s = build_weighting_from_config(loss).log_variance()["semantic"]  # -0.7 as a float32 holds it
    for task in ("semantic", "depth"):
        assert card.task_uncertainty[task].log_variance == s
        assert card.task_uncertainty[task].learned is True
    assert card.task_uncertainty["instance"].log_variance == 0.0
    assert card.task_uncertainty["instance"].learned is False
    assert card.weighting == "uncertainty"
    assert card.metrics == {"semantic_miou": 12.5}


def test_fixed_weights_give_their_equivalent_s_not_learned(model: SceneNetwork) -> None:
    weights = {"semantic": 0.89, "instance": 0.01, "depth": 0.1}
    card = card_of(checkpoint_state(LossConfig(strategy="fixed", weights=weights)), model)
    scale = {"semantic": 1.0, "instance": 0.5, "depth": 0.5}
    for task in TASKS:
        uncertainty = card.task_uncertainty[task]
        assert uncertainty.learned is False
        assert uncertainty.log_variance == pytest.approx(math.log(scale[task] / weights[task]))
        assert uncertainty.sigma == pytest.approx(math.sqrt(scale[task] / weights[task]))


def test_the_card_has_the_keys_it_has_always_had(model: SceneNetwork) -> None:
    raw = card_of(checkpoint_state(LossConfig()), model).to_dict()
    assert set(raw) == {
        "schema",
        "name",
        "version",
        "backbone",
        "precision",
        "input",
        "outputs",
        "classes",
        "ignore_index",
        "task_uncertainty",
        "weighting",
        "pretrained",
        "metrics",
        "training",
        "exported_at",
        "versions",
    }
    assert set(raw["input"]) == {
        "name",
        "dtype",
        "layout",
        "color",
        "height",
        "width",
        "spatial_multiple",
        "fixed_size",
        "resize",
        "normalisation",
    }
    assert set(raw["training"]) == {
        "steps",
        "data_source",
        "data_mix",
        "data_terms",
        "resolution",
        "config_sha256",
        "earlier_stages",
    }
    assert set(raw["classes"][0]) == {"name", "train_id", "cityscapes_id", "color", "is_thing"}
    assert set(raw["versions"]) == {"scene_mtl", "torch", "onnx", "onnxruntime", "python"}
    assert raw["training"]["earlier_stages"] == []  # no init_from: the whole history is this run
    assert raw["training"]["steps"] == 40 and raw["input"]["spatial_multiple"] == model.output_stride
    assert raw["pretrained"] is None  # no weight file named: a random start


def test_a_card_reads_back_as_the_exporter_built_it(model: SceneNetwork) -> None:
    card = card_of(checkpoint_state(LossConfig(strategy="dwa")), model)
    assert ModelCard.from_json(card.to_json()) == card
    assert ModelCard.from_json(card.to_json(indent=None)) == card


def test_published_weights_are_named_by_their_sha256(model: SceneNetwork) -> None:
    sha256 = next(iter(PRETRAINED_SOURCES))
    known = card_of(checkpoint_state(LossConfig(), backbone_sha256=sha256.upper()), model).pretrained
    assert known == PretrainedWeights(sha256=sha256, **PRETRAINED_SOURCES[sha256])
    other = card_of(checkpoint_state(LossConfig(), backbone_sha256="0" * 64), model).pretrained
    assert other == PretrainedWeights(sha256="0" * 64, name="unrecorded weight file")


def test_a_weighting_state_that_does_not_fit_its_config_is_refused(model: SceneNetwork) -> None:
    state = checkpoint_state(LossConfig(strategy="uncertainty"))
    state["weighting"] = build_weighting_from_config(LossConfig(tasks=["semantic"])).state_dict()
    with pytest.raises(CheckpointError, match="loss weighting does not fit its config"):
        card_of(state, model)
