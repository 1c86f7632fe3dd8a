"""Fixed weights matched to a learned run's weight × learning-rate integral, on hand-made schedules."""

import csv
import json
from pathlib import Path

import pytest

from training.rate_matching import (
    Schedule,
    end_point_weights,
    main,
    rate_matched_scale,
    rate_weighted_weights,
    read_schedule,
    step_length,
    step_mean_weights,
)
from training.train import LOG_COLUMNS

# Rows at steps 2, 4 and 5 (log_every 2, then the last step): spans 2, 2 and 1.
# The depth weight rises as the rate falls, as the learned arm's does.
STEPS = (2, 4, 5)
LR = (0.4, 0.2, 0.1)
WEIGHTS = {"semantic": (1.0, 1.0, 2.0), "instance": (0.5, 0.5, 0.5), "depth": (1.0, 3.0, 10.0)}
# Σ span·lr = 0.8 + 0.4 + 0.1 = 1.3; Σ span·lr·w: semantic 1.4, instance 0.65, depth 3.0.
RATE_WEIGHTED = {"semantic": 1.4 / 1.3, "instance": 0.5, "depth": 3.0 / 1.3}


def write_log(
    path: Path, steps: tuple[int, ...], lr: tuple[float, ...], weights: dict[str, tuple[float, ...]]
) -> Path:
    """A log.csv with scene-train's columns; the columns not read here hold 0."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS, restval=0)
        writer.writeheader()
        for row, (step, rate) in enumerate(zip(steps, lr, strict=True)):
            writer.writerow({"step": step, "lr": rate} | {f"weight_{t}": w[row] for t, w in weights.items()})
    return path


def test_each_task_weight_is_averaged_with_the_rate_of_the_steps_it_stood_for() -> None:
    schedule = Schedule(STEPS, LR, WEIGHTS)
    assert schedule.spans() == [2, 2, 1]
    assert rate_weighted_weights([schedule]) == pytest.approx(RATE_WEIGHTED)
    # The plain mean over steps counts the late, low-rate depth weights at full value.
    assert step_mean_weights([schedule]) == pytest.approx({"semantic": 1.2, "instance": 0.5, "depth": 3.6})
    assert end_point_weights([schedule]) == {"semantic": 2.0, "instance": 0.5, "depth": 10.0}


def test_the_scale_gives_fixed_weights_the_learned_integral() -> None:
    schedule = Schedule(STEPS, LR, WEIGHTS)
    learned_integral = 1.4 + 0.65 + 3.0  # Σ_t lr_t · Σ_i w_i(t)
    for fixed in ({"semantic": 1 / 3, "instance": 1 / 3, "depth": 1 / 3}, {"semantic": 0.5, "depth": 1.5}):
        k = rate_matched_scale([schedule], fixed)
        assert 1.3 * k * sum(fixed.values()) == pytest.approx(learned_integral)
    assert rate_matched_scale([schedule], {"semantic": 0.5, "depth": 0.5}) == pytest.approx(5.05 / 1.3)
    with pytest.raises(ValueError, match="positive"):
        rate_matched_scale([schedule], {"semantic": 0.0})


def test_several_runs_are_pooled_step_by_step() -> None:
    first = Schedule(STEPS, LR, WEIGHTS)
    flat = Schedule((1, 2), (1.0, 1.0), {"semantic": (1.0, 1.0), "instance": (1.0, 1.0), "depth": (1.0, 1.0)})
    pooled = rate_weighted_weights([first, flat])
    assert pooled["semantic"] == pytest.approx((1.4 + 2.0) / (1.3 + 2.0))
    assert pooled["depth"] == pytest.approx((3.0 + 2.0) / (1.3 + 2.0))
    assert end_point_weights([first, flat])["depth"] == pytest.approx(5.5)


def test_the_command_reads_scene_train_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "log.csv", STEPS, LR, WEIGHTS)
    assert read_schedule(log) == Schedule(STEPS, LR, WEIGHTS)
    assert main([str(log), "--weights", "semantic=0.5", "depth=0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rate_weighted_weights"] == pytest.approx(RATE_WEIGHTED)
    assert report["rate_matched_scale"] == pytest.approx(5.05 / 1.3)
    assert report["fixed_weights"] == {"semantic": 0.5, "depth": 0.5}


def test_a_file_that_is_not_a_training_log_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "metrics.csv"
    other.write_text("step,loss\n1,0.5\n")
    assert main([str(other)]) == 2
    assert "weight_semantic" in capsys.readouterr().err
    shuffled = write_log(tmp_path / "log.csv", (4, 2), (0.1, 0.2), {t: (1.0, 1.0) for t in WEIGHTS})
    assert main([str(shuffled)]) == 2
    assert "rise" in capsys.readouterr().err


def test_step_length_counts_a_clipped_gradient_at_the_clip_norm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Spans 2, 2, 1 at rates 0.4, 0.2, 0.1; gradient norms 5, 20, 40 against a clip of 10:
    # 2·0.4·5 + 2·0.2·10 + 1·0.1·10 = 4 + 4 + 1. Unclipped, the last two would give 8 + 4.
    log = write_log(tmp_path / "log.csv", STEPS, LR, WEIGHTS)
    rows = list(csv.DictReader(log.open()))
    for row, norm in zip(rows, (5, 20, 40), strict=True):
        row["grad_norm"] = norm
    with log.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    assert step_length(log, 10.0) == pytest.approx(9.0)
    assert step_length(log, 1000.0) == pytest.approx(4 + 8 + 4)
    assert main([str(log), "--clip-norm", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["step_length"] == {str(log): pytest.approx(9.0)}
    with pytest.raises(ValueError, match="positive"):
        step_length(log, 0.0)
