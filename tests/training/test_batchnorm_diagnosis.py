"""`scene-batchnorm` on tiny models: a planted tiny-variance channel is flagged, a healthy model is not."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from training.batchnorm_diagnosis import diagnose, main
from training.checkpoint import save_checkpoint
from training.config import load_config
from training.data.classes import NUM_CLASSES
from training.data.procedural import ProceduralScenes
from training.dataset import TaskDataset
from training.model import build_model
from training.weighting import build_weighting_from_config

REPO = Path(__file__).resolve().parents[2]
PLANTED = 5
MODES = ("running statistics", "eps 0.001", "eps 0.01", "batch statistics", "dropout on")


class TinySceneNet(nn.Module):
    """A 3x3 convolution, BatchNorm and ReLU, then a 1x1 convolution for each output `evaluate` scores."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.semantic = nn.Conv2d(8, NUM_CLASSES, 1)
        self.offsets = nn.Conv2d(8, 2, 1)
        self.depth = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(8, 1, 1))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.features(images)
        return {
            "semantic_logits": self.semantic(features),
            "instance_offsets": self.offsets(features),
            "inverse_depth": self.depth(features),
        }


def scenes(split: str, count: int) -> ProceduralScenes:
    return ProceduralScenes(split=split, seed=0, count=count, height=32, width=64)


@torch.no_grad()
def trained_statistics(model: TinySceneNet, planted: int | None = None) -> TinySceneNet:
    """Running statistics gathered on training scenes, as training leaves them.

    ``planted``: that channel's filter is 0 while they are gathered (a constant channel:
    running mean and variance 0) and positive afterwards, as when the weights move on
    after the running statistics last saw the channel.
    """
    filters = model.features[0].weight
    if planted is not None:
        filters[planted] = 0.0
    model.features[1].momentum = None  # the plain mean over the batches
    model.train()
    for batch in DataLoader(TaskDataset(scenes("train", 16)), batch_size=8):
        model(batch["image"])
    if planted is not None:
        filters[planted] = 0.05
    return model.eval()


def test_a_healthy_model_is_not_flagged() -> None:
    report = diagnose(trained_statistics(TinySceneNet()), scenes("test", 8), batch_size=4)
    assert report["flagged_channels"] == 0
    assert report["first_flagged_layer"] is None
    (layer,) = report["layers"]
    assert layer["layer"] == "features.1" and layer["channels"] == 8
    assert layer["max_abs_z"] < 10


def test_a_planted_tiny_variance_channel_is_flagged() -> None:
    model = trained_statistics(TinySceneNet(), planted=PLANTED)
    report = diagnose(model, scenes("test", 8), batch_size=4)
    (layer,) = report["layers"]
    assert layer["smallest_running_variances"][0] == {"channel": PLANTED, "running_var": 0.0}
    assert [c["channel"] for c in layer["flagged"]] == [PLANTED]
    flagged = layer["flagged"][0]
    assert flagged["z"] > 10 and flagged["batch_mean"] > 0
    assert report["first_flagged_layer"] == "features.1"
    assert model.features[1].eps == 1e-5  # the raised eps went to copies
    scores = report["scores"]
    assert tuple(scores) == MODES
    assert all(math.isfinite(value) for mode in MODES for value in scores[mode].values())
    # A floor under the planted variance changes what the heads see.
    assert scores["eps 0.01"] != scores["running statistics"]


def test_the_command_reports_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(REPO / "configs" / "smoke.yaml", ["data.height=32", "data.width=64"])
    torch.manual_seed(0)
    model = build_model(config.model).eval()
    checkpoint = tmp_path / "last.pt"
    weighting = build_weighting_from_config(config.loss)
    save_checkpoint(checkpoint, config=config, step=6, model=model, weighting=weighting)
    out = tmp_path / "bn.json"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--count", "4", "--batch-size", "2"]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["step"] == 6 and report["scenes"] == 4
    assert len(report["layers"]) > 10  # every BatchNorm of the backbone and heads
    assert tuple(report["scores"]) == MODES
    printed = capsys.readouterr().out
    assert "smallest running var" in printed and "batch statistics" in printed


def test_the_command_refuses_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "bn.json")]) == 2
    assert "not found" in capsys.readouterr().err
