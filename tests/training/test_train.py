import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from training.checkpoint import load_checkpoint, weighting_from_checkpoint
from training.config import load_config
from training.train import LOG_COLUMNS, main, setup_placement

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
# As tests/conftest.py's SMALL_TRAINING: a third of the smoke config's cost, the same code paths.
SMALL = ("data.height=32", "data.width=64", "data.val_count=2")


def read_log(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "log.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def train(run_dir: Path, *overrides: str) -> int:
    """configs/smoke.yaml at 32x64 with ``overrides``; ``smoke_run`` (tests/conftest.py) is its plain run."""
    return main(["--config", str(SMOKE), f"run_dir={run_dir}", *SMALL, *overrides])


def test_smoke_run_writes_log_metrics_checkpoint_and_sigma_plot(smoke_run: Path) -> None:
    with (smoke_run / "log.csv").open() as f:
        assert tuple(csv.DictReader(f).fieldnames or ()) == LOG_COLUMNS
    rows = read_log(smoke_run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    for key in (
        "semantic_miou",
        "instance_mean_error_px",
        "inverse_depth_mean_error",
        "pixel_accuracy",
        "depth_abs_rel",
        "depth_delta1",
        "sigma",
    ):
        assert key in metrics
    assert (smoke_run / "sigma.png").stat().st_size > 1000
    state = load_checkpoint(smoke_run / "last.pt")
    assert state["step"] == 6
    assert state["config"].model.aspp_channels == 32  # the config travels with the checkpoint


def test_learned_sigmas_move_during_training(smoke_run: Path) -> None:
    rows = read_log(smoke_run)
    for task in ("semantic", "instance", "depth"):
        assert rows[-1][f"sigma_{task}"] != pytest.approx(rows[0][f"sigma_{task}"], abs=1e-4)
    # Semantic cross-entropy (~3) is large for σ=1, so its σ must grow; the tiny depth loss pulls σ down.
    assert rows[-1]["sigma_semantic"] > 1.0
    assert rows[-1]["sigma_depth"] < 1.0


def test_learning_rate_follows_the_poly_schedule(smoke_run: Path) -> None:
    rows = read_log(smoke_run)
    for row in rows:
        step = int(row["step"]) - 1  # the rate used for the update that ended at this step
        assert row["lr"] == pytest.approx(0.01 * (1 - step / 6) ** 0.9)


def test_a_small_model_overfits_a_handful_of_scenes(tmp_path: Path) -> None:
    overrides = (
        "data.train_count=4",
        "data.hflip=false",
        "batch_size=4",
        "steps=60",
        "optim.lr=0.1",
        "checkpoint_every=0",
        "model.aspp_channels=64",
        "model.decoder_channels=64",
    )
    assert train(tmp_path, *overrides) == 0
    rows = read_log(tmp_path)
    for task in ("semantic", "instance", "depth"):
        start = rows[0][f"loss_{task}"]
        end = sum(r[f"loss_{task}"] for r in rows[-5:]) / 5
        assert end < 0.5 * start, f"{task}: {start:.3f} -> {end:.3f}"


def test_resuming_continues_the_same_run(smoke_run: Path, tmp_path: Path) -> None:
    straight, resumed = smoke_run, tmp_path / "resumed"  # the straight run kept its checkpoints
    halfway = straight / "step_0000003.pt"
    assert train(resumed, f"resume={halfway}", "keep_checkpoints=true") == 0
    a = load_checkpoint(straight / "last.pt")
    b = load_checkpoint(resumed / "last.pt")
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    s_a, s_b = weighting_from_checkpoint(a).log_variance(), weighting_from_checkpoint(b).log_variance()
    assert s_a == pytest.approx(s_b, rel=1e-5)
    assert [int(r["step"]) for r in read_log(resumed)] == [4, 5, 6]


def test_stop_at_splits_a_run_without_changing_it(smoke_run: Path, tmp_path: Path) -> None:
    straight, split = smoke_run, tmp_path / "split"
    assert train(split, "stop_at=4") == 0
    assert load_checkpoint(split / "last.pt")["step"] == 4
    assert not (split / "metrics.json").exists()  # no final evaluation until the end
    assert train(split, f"resume={split / 'last.pt'}") == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert [int(r["step"]) for r in read_log(split)] == [1, 2, 3, 4, 5, 6]
    assert train(split, f"resume={split / 'last.pt'}", "steps=8", "stop_at=6") == 2


def test_single_task_training_leaves_other_heads_untouched(tmp_path: Path) -> None:
    assert train(tmp_path, "loss.strategy=fixed", "loss.weights={semantic: 1, instance: 0, depth: 0}") == 0
    state = load_checkpoint(tmp_path / "last.pt")
    torch.manual_seed(0)
    from training.model import SceneModel

    initial = SceneModel(state["config"].model).state_dict()
    trained = state["model"]
    weights = [k for k in initial if k.endswith("weight") and "num_batches" not in k]
    for key in weights:
        if key.startswith(("instance_head.", "depth_head.")):
            torch.testing.assert_close(trained[key], initial[key], msg=key)
    assert not torch.equal(trained["semantic_head.3.weight"], initial["semantic_head.3.weight"])
    rows = read_log(tmp_path)
    assert all(math.isnan(r["sigma_instance"]) for r in rows)  # not a participant


def test_non_finite_loss_stops_with_task_and_step_and_keeps_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import training.train as train_module

    real = train_module.task_losses
    calls = {"n": 0}

    def poisoned(
        outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], **options: Any
    ) -> dict[str, torch.Tensor]:
        losses = real(outputs, targets, **options)
        calls["n"] += 1
        if calls["n"] == 5:  # the step with index 4, after the checkpoint at step 3
            losses["depth"] = losses["depth"] * float("nan")
        return losses

    monkeypatch.setattr(train_module, "task_losses", poisoned)
    assert train(tmp_path) == 1
    err = capsys.readouterr().err
    assert "depth" in err and "step 4" in err and "last.pt" in err
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 3
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.backbone=vgg", "mobilenet_v3_large, resnet50, resnet101"),
        ("loss.strategy=magic", "dwa, fixed, uncertainty, uncertainty_log1p"),
        ("steps=0", "steps"),
        ("stop_at=99", "stop_at"),
        ("optim.lr=fast", "optim.lr"),
        ("optim.momentun=0.9", "valid keys here"),
        ("data.source=cityscapes", "data.root"),
        ("optim.grad_clip_norm=-1", "optim.grad_clip_norm"),
        ("optim.log_variance_grad_clip=0", "optim.log_variance_grad_clip"),
        ("data.mix={procedural: 1, lidar: 1}", "data.mix.lidar: unknown source"),
        ("data.mix={procedural: 1, camvid: 0}", "data.mix.camvid: share must be positive"),
        ("data.mix={camvid: 1}", "must be one of data.mix's sources"),
        ("data.scale_range=[2, 1]", "data.scale_range"),
        ("model.backbone_weights=/no/such/file.pt", "/no/such/file.pt"),
    ],
)
def test_bad_configs_stop_with_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    assert train(tmp_path, override) == 2
    err = capsys.readouterr().err
    assert err.startswith("scene-train: error:") and message in err
    assert "Traceback" not in err


def test_missing_cityscapes_root_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(tmp_path, "data.source=cityscapes", f"data.root={tmp_path / 'nowhere'}") == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err


def test_overrides_reach_nested_fields_and_keep_types() -> None:
    config = load_config(SMOKE, ["optim.lr=0.5", "model.aspp_rates=[2, 3, 4]", "data.hflip=false", "steps=9"])
    assert config.optim.lr == 0.5 and config.model.aspp_rates == [2, 3, 4]
    assert config.data.hflip is False and config.steps == 9
    assert config.data.height == 64  # from the file


def test_ddp_with_two_cpu_processes(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "training",
            "--config",
            str(SMOKE),
            f"run_dir={tmp_path}",
            *SMALL,
            "steps=4",
            "checkpoint_every=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_log(tmp_path)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # one log, written by rank 0 only
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4
    assert not list(tmp_path.glob("*.tmp"))


def test_resuming_in_the_same_directory_logs_each_step_once(tmp_path: Path) -> None:
    assert train(tmp_path, "keep_checkpoints=true", "eval_every=3") == 0
    assert train(tmp_path, f"resume={tmp_path / 'step_0000003.pt'}", "eval_every=3") == 0
    assert [int(r["step"]) for r in read_log(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_resuming_with_a_different_model_says_what_does_not_fit(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    halfway = smoke_run / "step_0000003.pt"
    code = train(tmp_path / "b", f"resume={halfway}", "model.aspp_channels=16", "steps=6")
    err = capsys.readouterr().err
    assert code == 2
    assert "does not fit this config" in err and "Traceback" not in err


def test_resume_uses_the_optimizer_settings_given_now(smoke_run: Path, tmp_path: Path) -> None:
    assert train(tmp_path / "b", f"resume={smoke_run / 'step_0000003.pt'}", "optim.lr=0.002") == 0
    first_resumed = read_log(tmp_path / "b")[0]
    assert first_resumed["lr"] == pytest.approx(0.002 * (1 - 3 / 6) ** 0.9)


def test_overrides_edit_one_entry_of_a_mapping_and_accept_exponents() -> None:
    config = load_config(None, ["loss.strategy=fixed", "loss.weights.depth=0", "optim.lr=1e-3"])
    assert config.loss.weights == {
        "semantic": pytest.approx(1 / 3),
        "instance": pytest.approx(1 / 3),
        "depth": 0.0,
    }
    assert config.optim.lr == 0.001
    replaced = load_config(None, ["loss.weights={semantic: 1}"])
    assert replaced.loss.weights == {"semantic": 1.0}


@pytest.mark.parametrize(("device", "index"), [("auto", 0), ("cuda", 0), ("cuda:1", 1)])
def test_a_single_process_picks_the_gpu_it_is_told(
    monkeypatch: pytest.MonkeyPatch, device: str, index: int
) -> None:
    # No GPU here: fake one, and record which device training would bind to.
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    placement = setup_placement(load_config(SMOKE, [f"device={device}"]))
    assert placement.device == torch.device("cuda", index) and chosen == [placement.device]


def test_camvid_without_a_location_names_both_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCENE_CAMVID_ROOT", raising=False)
    assert train(tmp_path, "data.mix={procedural: 0.5, camvid: 0.5}", "batch_size=4") == 2
    err = capsys.readouterr().err
    assert "data.camvid_root" in err and "SCENE_CAMVID_ROOT" in err and "Traceback" not in err


def test_two_source_training_runs_and_resumes_exactly(tmp_path: Path, camvid_root: Path) -> None:
    mix = ["data.mix={procedural: 0.5, camvid: 0.5}", f"data.camvid_root={camvid_root}", "batch_size=4"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train(whole, *mix) == 0
    rows = read_log(whole)
    assert len(rows) == 6
    assert all(math.isfinite(r[f"sigma_{t}"]) for r in rows for t in ("semantic", "instance", "depth"))
    assert train(split, *mix, "stop_at=3") == 0
    assert train(split, *mix, f"resume={split / 'last.pt'}") == 0
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(split / "last.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert weighting_from_checkpoint(a).log_variance() == weighting_from_checkpoint(b).log_variance()


def test_clipping_bounds_the_network_and_leaves_log_variances_to_their_own_bound() -> None:
    from training.config import OptimConfig
    from training.train import clip_gradients
    from training.weighting import build_weighting

    network = torch.nn.Linear(4, 4)
    weighting = build_weighting("uncertainty")
    for p in network.parameters():
        p.grad = torch.full_like(p, 100.0)
    grads = {"semantic": -0.3, "instance": -40.0, "depth": 0.5}
    for task, value in grads.items():
        weighting.get_parameter(f"task_log_variance.{task}").grad = torch.tensor(value)
    clip_gradients(network, weighting, OptimConfig(grad_clip_norm=1.0, log_variance_grad_clip=5.0), step=0)
    norm = torch.cat([p.grad.flatten() for p in network.parameters() if p.grad is not None]).norm()
    assert norm.item() == pytest.approx(1.0, rel=1e-4)
    after = {t: weighting.get_parameter(f"task_log_variance.{t}").grad.item() for t in grads}  # type: ignore[union-attr]
    # Not scaled by the network's clip factor (1/400 here); only the spike is bounded.
    assert after == pytest.approx({"semantic": -0.3, "instance": -5.0, "depth": 0.5})


def test_max_minutes_pauses_a_run_that_resume_goes_on_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A limit far below one step's time: the run stops after its first step, checkpointed.
    assert train(tmp_path, "max_minutes=0.00001") == 0
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1
    assert "stopped at step 1 of 6" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()
    assert train(tmp_path, f"resume={tmp_path / 'last.pt'}") == 0
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 6
    assert [int(r["step"]) for r in read_log(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_the_log_records_gradient_norms_and_clipped_steps(tmp_path: Path) -> None:
    # A bound no gradient stays under: every step is clipped, and the count says so.
    assert train(tmp_path, "optim.grad_clip_norm=1e-9", "log_every=2") == 0
    rows = read_log(tmp_path)
    assert [int(r["clipped_steps"]) for r in rows] == [2, 2, 2]
    assert all(r["grad_norm"] > 1e-9 for r in rows)
    from training.study.score import clip_rate

    assert clip_rate(tmp_path / "log.csv", 6) == 1.0
    assert train(tmp_path / "free", "optim.grad_clip_norm=1e9") == 0
    assert clip_rate(tmp_path / "free" / "log.csv", 6) == 0.0


def test_a_run_started_from_another_records_the_whole_chain(smoke_run: Path, tmp_path: Path) -> None:
    from model_export.card import build_model_card
    from training.checkpoint import model_from_checkpoint

    stage2, stage3 = tmp_path / "stage2", tmp_path / "stage3"
    assert train(stage2, f"init_from={smoke_run / 'last.pt'}", "steps=3", "stop_at=2") == 0
    # Resumed in a second chunk, as make model does: the history must survive the resume.
    assert train(stage2, f"init_from={smoke_run / 'last.pt'}", "steps=3", f"resume={stage2 / 'last.pt'}") == 0
    assert train(stage3, f"init_from={stage2 / 'last.pt'}", "steps=2") == 0

    model, state = model_from_checkpoint(stage3 / "last.pt")
    card = build_model_card(state, model, precision="fp32", name="unit", version="1").training
    assert card.earlier_stages is not None
    assert [(s.checkpoint, s.steps) for s in card.earlier_stages] == [
        (str(smoke_run / "last.pt"), 6),
        (str(stage2 / "last.pt"), 3),
    ]
    assert card.steps == 2 and card.total_steps == 11
    assert card.earlier_stages[0].config_sha256 != card.earlier_stages[1].config_sha256
    assert card.earlier_stages[1].data_mix == {"procedural": 1.0}
