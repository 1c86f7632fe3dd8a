"""``optim.name``: SGD (the paper's) or Adam, the study's rate control."""

import copy
import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from training.checkpoint import load_checkpoint
from training.config import ConfigError, LossConfig, load_config
from training.train import build_optimizer, main
from training.weighting import build_weighting_from_config

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"


def test_an_unknown_optimiser_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"optim\.name: unknown optimiser 'rmsprop'; valid: sgd, adam"):
        load_config(None, ["optim.name=rmsprop"])
    assert load_config(None).optim.name == "sgd"  # the default is unchanged


def test_a_two_step_run_trains_with_adam(tmp_path: Path) -> None:
    overrides = ["optim.name=adam", "optim.lr=1e-3", "steps=2", "checkpoint_every=0"]
    small = ["data.height=32", "data.width=64", "data.val_count=2"]
    assert main(["--config", str(SMOKE), f"run_dir={tmp_path}", *small, *overrides]) == 0
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["config"].optim.name == "adam"
    network_state = state["optimizer"]["state"][0]
    assert {"exp_avg", "exp_avg_sq"} <= set(network_state)  # Adam's moments, no momentum buffer
    with (tmp_path / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["loss_total"])) for r in rows)


def test_resuming_under_the_other_optimiser_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = ["data.height=32", "data.width=64", "data.val_count=2", "steps=2"]
    assert main(["--config", str(SMOKE), f"run_dir={tmp_path}", *small, "stop_at=1"]) == 0
    resumed = [*small, f"resume={tmp_path / 'last.pt'}", "optim.name=adam"]
    assert main(["--config", str(SMOKE), f"run_dir={tmp_path}", *resumed]) == 2
    assert "optim.name=sgd" in capsys.readouterr().err


def _updates_for_loss_scales(name: str, scales: tuple[float, float]) -> list[torch.Tensor]:
    """The parameters of two copies of one tiny network after three steps on ``scale · loss``."""
    config = load_config(None, [f"optim.name={name}", "optim.lr=0.01"])
    weighting = build_weighting_from_config(LossConfig(strategy="fixed"))
    torch.manual_seed(0)
    # No bias before the batch norm: its gradient is 0 up to rounding, which Adam would scale up.
    original = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))
    images = torch.rand(2, 3, 8, 8)
    trained = []
    for scale in scales:
        network = copy.deepcopy(original)
        optimizer = build_optimizer(network, weighting, config)
        for _ in range(3):
            optimizer.zero_grad()
            (scale * network(images).square().mean()).backward()
            optimizer.step()
        trained.append(torch.cat([p.detach().flatten() for p in network.parameters()]))
    return trained


def test_adam_cancels_a_constant_loss_scale_and_sgd_does_not() -> None:
    # With weight decay on (1e-4 by default): decay added to the gradient would not cancel.
    plain, tenfold = _updates_for_loss_scales("adam", (1.0, 10.0))
    torch.testing.assert_close(tenfold, plain, rtol=1e-4, atol=1e-6)
    plain, tenfold = _updates_for_loss_scales("sgd", (1.0, 10.0))
    assert not torch.allclose(tenfold, plain, rtol=1e-2, atol=1e-4)


def test_under_adam_the_log_variances_keep_their_own_rate_and_no_decay() -> None:
    config = load_config(None, ["optim.name=adam", "optim.lr=1e-3", "optim.log_variance_lr=0.05"])
    weighting = build_weighting_from_config(config.loss)
    optimizer = build_optimizer(nn.Linear(2, 2), weighting, config)
    assert isinstance(optimizer, torch.optim.AdamW)
    network, log_variances = optimizer.param_groups
    assert (network["lr"], network["weight_decay"]) == (1e-3, config.optim.weight_decay)
    assert (log_variances["lr"], log_variances["weight_decay"]) == (0.05, 0.0)
