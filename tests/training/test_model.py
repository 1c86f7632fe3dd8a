from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50

from training.config import ConfigError, from_dict
from training.model import BACKBONES, ModelConfig, SceneModel


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_backbone_gives_three_full_resolution_outputs(backbone: str) -> None:
    model = SceneModel(ModelConfig(backbone=backbone, num_classes=7, aspp_channels=16, decoder_channels=16))
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 96))
    assert out["semantic_logits"].shape == (2, 7, 64, 96)
    assert out["instance_offsets"].shape == (2, 2, 64, 96)
    assert out["inverse_depth"].shape == (2, 1, 64, 96)
    assert model.output_stride == (16 if backbone.startswith("mobilenet") else 8)


def test_input_normalisation_is_inside_the_model() -> None:
    model = SceneModel(ModelConfig(aspp_channels=16, decoder_channels=16)).eval()
    grey = torch.full((1, 3, 32, 64), 0.5)
    normalised = (grey - model.mean) / model.std
    with torch.no_grad():
        features = model.backbone(normalised)
        direct = model.semantic_head(model.aspp(features))
        through_forward = model(grey)["semantic_logits"]
    expected = torch.nn.functional.interpolate(direct, size=(32, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(through_forward, expected)


def test_unknown_backbone_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="mobilenet_v3_large, resnet50, resnet101"):
        SceneModel(ModelConfig(backbone="vgg16"))


def test_local_backbone_weights_are_loaded(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = resnet50(weights=None)
    path = tmp_path / "resnet50.pt"
    torch.save(reference.state_dict(), path)
    model = SceneModel(
        ModelConfig(backbone="resnet50", aspp_channels=16, decoder_channels=16, backbone_weights=str(path))
    )
    torch.testing.assert_close(
        model.backbone.state_dict()["layer4.2.conv3.weight"], reference.layer4[2].conv3.weight
    )


def test_backbone_weights_that_fit_nothing_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    torch.save({"unrelated": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="no tensor"):
        SceneModel(ModelConfig(backbone_weights=str(path)))
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        SceneModel(ModelConfig(backbone_weights=str(tmp_path / "missing.pt")))


def test_aspp_dropout_is_a_setting_and_zero_makes_training_mode_deterministic() -> None:
    """Issue 28's ablation: no dropout between ASPP and the task decoders' BatchNorm."""
    images = torch.rand(2, 3, 32, 64)
    outputs = {}
    for rate in (0.5, 0.0):
        torch.manual_seed(0)
        model = SceneModel(ModelConfig(aspp_channels=16, decoder_channels=16, aspp_dropout=rate)).train()
        assert model.aspp.project[-1].p == rate
        with torch.no_grad():
            outputs[rate] = [model(images)["semantic_logits"] for _ in range(2)]
    # With dropout, two training-mode passes drop different channels; without, they agree.
    assert not torch.allclose(*outputs[0.5])
    torch.testing.assert_close(*outputs[0.0])


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_an_aspp_dropout_outside_zero_to_one_is_refused(rate: float) -> None:
    with pytest.raises(ConfigError, match=r"model.aspp_dropout: must be in \[0, 1\)"):
        from_dict({"model": {"aspp_dropout": rate}}).validate()
