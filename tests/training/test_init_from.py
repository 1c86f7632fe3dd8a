"""Starting a run from another run's checkpoint (``init_from``), and the model options it
was built for: instance offsets in ``offset_scale``-pixel units and stride-8 geometry
decoders.

ESPNetv2 at width 1.0 and 64x128 keeps each model a fraction of a second to build.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.checkpoint import (
    CheckpointError,
    config_sha256,
    load_checkpoint,
    save_checkpoint,
    stages_before,
    start_from,
)
from training.config import ConfigError, TrainConfig, from_dict
from training.model import ESPNetv2SceneModel, ModelConfig, build_model
from training.weighting import build_weighting_from_config

IMAGES = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(0))


def espnetv2_config(**model: object) -> TrainConfig:
    return from_dict({"model": {"backbone": "espnetv2", "width": 1.0, **model}})


def trained_checkpoint(path: Path, config: TrainConfig) -> tuple[torch.nn.Module, dict[str, float]]:
    """A checkpoint whose every output is non-trivial: random output layers, moved s."""
    torch.manual_seed(1)
    model = build_model(config.model)
    for decoder in (model.instance_decoder, model.depth_decoder):  # type: ignore[union-attr]
        torch.nn.init.normal_(decoder.classifier.weight, std=0.5)
        torch.nn.init.normal_(decoder.classifier.bias, std=0.5)
    weighting = build_weighting_from_config(config.loss)
    with torch.no_grad():
        for parameter in weighting.parameters():
            parameter.copy_(torch.linspace(-2.0, 1.5, parameter.numel()).view_as(parameter))
    save_checkpoint(path, config=config, step=800, model=model, weighting=weighting)
    return model.eval(), weighting.log_variance()


def outputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        result: dict[str, torch.Tensor] = model.eval()(IMAGES)
    return result


def test_instance_offsets_are_in_units_of_offset_scale_pixels() -> None:
    model = ESPNetv2SceneModel(ModelConfig(backbone="espnetv2", width=1.0, offset_scale=16.0)).eval()
    with torch.no_grad():
        model.instance_decoder.classifier.bias.copy_(torch.tensor([1.0, -0.5]))
    offsets = outputs(model)["instance_offsets"]
    assert torch.all(offsets[:, 0] == 16.0) and torch.all(offsets[:, 1] == -8.0)


def test_stride_8_geometry_decoders_give_full_resolution_outputs() -> None:
    model = ESPNetv2SceneModel(ModelConfig(backbone="espnetv2", width=1.0, instance_stride=8, depth_stride=8))
    assert model.depth_decoder.classifier is model.depth_decoder.pyramid8.out
    out = outputs(model)
    assert out["instance_offsets"].shape == (2, 2, 64, 128)
    assert out["inverse_depth"].shape == (2, 1, 64, 128)
    assert out["semantic_logits"].shape[-2:] == (64, 128)


def test_a_new_offset_scale_keeps_the_offsets_in_pixels(tmp_path: Path) -> None:
    before, s = trained_checkpoint(tmp_path / "v3.pt", espnetv2_config())
    config = espnetv2_config(offset_scale=16.0)
    model = build_model(config.model)
    weighting = build_weighting_from_config(config.loss)

    fresh = start_from(tmp_path / "v3.pt", model, weighting, config)

    assert fresh == []
    expected, got = outputs(before), outputs(model)
    assert got["instance_offsets"].abs().max() > 0.1  # the check below means something
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)
    assert weighting.log_variance() == pytest.approx(s)  # the tasks start at the balance reached


def test_layers_of_another_shape_start_as_built_and_are_named(tmp_path: Path) -> None:
    before, _ = trained_checkpoint(tmp_path / "v3.pt", espnetv2_config())
    config = espnetv2_config(instance_stride=8, depth_stride=8)
    model = build_model(config.model)

    fresh = start_from(tmp_path / "v3.pt", model, build_weighting_from_config(config.loss), config)

    assert fresh == [
        "depth_decoder.pyramid8.out.bias",
        "depth_decoder.pyramid8.out.weight",
        "instance_decoder.pyramid8.out.bias",
        "instance_decoder.pyramid8.out.weight",
    ]
    expected, got = outputs(before), outputs(model)
    torch.testing.assert_close(got["semantic_logits"], expected["semantic_logits"])
    assert got["inverse_depth"].abs().max() == 0  # the new output layers start at zero
    torch.testing.assert_close(
        model.depth_decoder.pyramid8.fuse[0].weight,  # type: ignore[union-attr]
        before.depth_decoder.pyramid8.fuse[0].weight,  # type: ignore[union-attr]
    )


def test_a_checkpoint_of_another_backbone_or_strategy_is_refused(tmp_path: Path) -> None:
    trained_checkpoint(tmp_path / "v3.pt", espnetv2_config())
    mobilenet = {"backbone": "mobilenet_v3_large", "aspp_channels": 16, "decoder_channels": 16}
    fixed = {"model": {"backbone": "espnetv2", "width": 1.0}, "loss": {"strategy": "fixed"}}
    for data, message in [
        ({"model": mobilenet}, "holds a model with backbone espnetv2"),
        (fixed, "strategy uncertainty"),
    ]:
        other = from_dict(data)
        with pytest.raises(CheckpointError, match=message):
            start_from(
                tmp_path / "v3.pt", build_model(other.model), build_weighting_from_config(other.loss), other
            )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"instance_stride": 2}, "model.instance_stride: must be 4 or 8"),
        ({"depth_stride": 16}, "model.depth_stride: must be 4 or 8"),
        ({"offset_scale": 0.0}, "model.offset_scale: must be positive"),
        ({"offset_scale": float("nan")}, "model.offset_scale: must be positive"),
    ],
)
def test_invalid_geometry_settings_are_refused(override: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        espnetv2_config(**override).validate()


def test_a_checkpoint_from_before_histories_follows_init_from_on_disk(tmp_path: Path) -> None:
    """Checkpoints written before they recorded their history still tell it, from the files."""
    trained_checkpoint(tmp_path / "stage1.pt", espnetv2_config())
    stage1 = load_checkpoint(tmp_path / "stage1.pt")
    assert stages_before(stage1) == []
    stage2 = {"config": espnetv2_config(offset_scale=16.0), "step": 600}
    stage2["config"].init_from = str(tmp_path / "stage1.pt")

    (only,) = stages_before(stage2)
    assert only["checkpoint"] == str(tmp_path / "stage1.pt") and only["steps"] == 800
    assert only["config_sha256"] == config_sha256(stage1["config"])

    (tmp_path / "stage1.pt").unlink()
    assert stages_before(stage2) == [
        {"checkpoint": str(tmp_path / "stage1.pt"), "steps": None, "config_sha256": None, "data_mix": None}
    ]
