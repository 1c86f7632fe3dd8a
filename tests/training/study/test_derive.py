"""Arms whose fixed weights come from the learned arm's runs: planned after them, read from their logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.training.study.conftest import toy_study
from training.study.advance import Budget, advance
from training.study.config import StudyConfigError
from training.study.parse import load_study
from training.study.plan import PlannedRun, WaitingError, derivation, plan, run_settings

THIRD = {"semantic": 1 / 3, "instance": 1 / 3, "depth": 1 / 3}

# A learned run's log.csv, by hand: two rows of 10 steps each, the rate halving while the
# weights of semantics and depth triple. Rate-weighted (Σ span·lr·w / Σ span·lr, Σ span·lr
# = 0.3): semantic (0.2 + 0.3) / 0.3 = 5/3, instance 0.5, depth (0.4 + 0.6) / 0.3 = 10/3;
# their sum 5.5 is k for weights that sum to 1. End point: 3 / 0.5 / 6.
LOG = "step,lr,loss,weight_semantic,weight_instance,weight_depth\n10,0.02,9.0,1,0.5,2\n20,0.01,8.0,3,0.5,6\n"


def controls_study(tmp_path: Path) -> Path:
    """Derived arms listed before the learned arm they read from; the single task on seeds 1 and 2 only."""
    return toy_study(
        tmp_path,
        seeds=[1, 2, 3],
        comparisons=[],
        arms=[
            {"name": "end_point", "from_learned": {"arm": "learned", "weights": "end_point"}},
            {
                "name": "unweighted_k",
                "overrides": {"loss.strategy": "fixed", "loss.weights": THIRD},
                "from_learned": {"arm": "learned", "weights": "rate_matched"},
            },
            {
                "name": "semantic_at_learned",
                "overrides": {"loss.strategy": "fixed", "loss.weights": {"semantic": 1}},
                "from_learned": {"arm": "learned", "weights": "rate_weighted"},
                "seeds": [1, 2],
            },
            {"name": "learned", "overrides": {"loss.strategy": "uncertainty"}},
        ],
    )


def finish_learned_run(run_dir: Path, log: str | None = LOG, **fields: Any) -> None:
    run_dir.mkdir(parents=True)
    result = {"steps": 20, "tasks": ["semantic", "instance", "depth"]} | fields
    (run_dir / "result.json").write_text(json.dumps(result))
    if log is not None:
        (run_dir / "log.csv").write_text(log)


def test_derived_arms_train_after_the_learned_run_of_their_seed(tmp_path: Path) -> None:
    study = load_study(controls_study(tmp_path))
    labels = [run.label for run in plan(study, study.seeds)]
    assert labels == [
        "learned seed 1", "end_point seed 1", "unweighted_k seed 1", "semantic_at_learned seed 1",
        "learned seed 2", "end_point seed 2", "unweighted_k seed 2", "semantic_at_learned seed 2",
        "learned seed 3", "end_point seed 3", "unweighted_k seed 3",
    ]  # fmt: skip


def test_k_and_the_per_task_weights_come_from_the_learned_runs_log(tmp_path: Path) -> None:
    study = load_study(controls_study(tmp_path))
    runs = {run.label: run for run in plan(study, study.seeds)}
    with pytest.raises(WaitingError, match="learned seed 1 is not finished"):
        run_settings(study, runs["end_point seed 1"])
    finish_learned_run(study.out / "learned" / "seed1")
    end_point = run_settings(study, runs["end_point seed 1"])
    assert end_point == {
        "loss.strategy": "fixed",
        "loss.weights": {"semantic": 3.0, "instance": 0.5, "depth": 6.0},
    }
    single = run_settings(study, runs["semantic_at_learned seed 1"])["loss.weights"]
    assert single == {"semantic": pytest.approx(5 / 3)}
    weights, record = derivation(study, runs["unweighted_k seed 1"])
    assert record["k"] == pytest.approx(5.5)
    assert weights == {t: pytest.approx(5.5 / 3) for t in THIRD}
    assert record["from"] == str(study.out / "learned" / "seed1" / "log.csv")
    assert (record["arm"], record["seed"], record["mode"]) == ("learned", 1, "rate_matched")
    with pytest.raises(WaitingError, match="learned seed 2 is not finished"):
        run_settings(study, runs["unweighted_k seed 2"])  # each seed reads its own learned run


def test_a_learned_run_restored_without_its_log_cannot_give_weights(tmp_path: Path) -> None:
    study = load_study(controls_study(tmp_path))
    finish_learned_run(study.out / "learned" / "seed1", log=None, restored_from="docs/study/results.json")
    run = next(r for r in plan(study, study.seeds) if r.label == "end_point seed 1")
    with pytest.raises(StudyConfigError, match=r"no .*log.csv \(restored from docs/study/results.json\)"):
        run_settings(study, run)
    short = LOG.splitlines()[:2]
    (study.out / "learned" / "seed1" / "log.csv").write_text("\n".join(short) + "\n")
    with pytest.raises(StudyConfigError, match="ends at step 10, the run trained 20 steps"):
        run_settings(study, run)


def test_a_derived_runs_result_records_k_and_the_log_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = load_study(controls_study(tmp_path))
    finish_learned_run(study.out / "learned" / "seed1")
    run = next(r for r in plan(study, study.seeds) if r.label == "unweighted_k seed 1")
    # Trained already (metrics.json), so advance only scores it; scoring is stubbed out.
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "metrics.json").write_text("{}")
    monkeypatch.setattr(
        sys.modules["training.study.advance"],
        "score",
        lambda *_: {"arm": run.arm.name, "test": {}, "tasks": []},
    )
    assert advance(study, run, run_settings(study, run), Budget(), say=lambda _: None)
    derived = json.loads((run.run_dir / "result.json").read_text())["derived_weights"]
    assert derived["k"] == pytest.approx(5.5)
    assert derived["from"].endswith("learned/seed1/log.csv")
    assert derived["base_weights"] == pytest.approx(THIRD)


def test_a_planned_run_of_an_arm_outside_its_seeds_is_not_planned(tmp_path: Path) -> None:
    study = load_study(controls_study(tmp_path))
    arm = study.arm("semantic_at_learned")
    assert study.arm_seeds(arm, [1, 2, 3]) == [1, 2]
    assert PlannedRun(arm, 3, tmp_path) not in plan(study, study.seeds)
