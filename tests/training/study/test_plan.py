"""The runs of a study, the grid point chosen on validation, and the seeds the pilot sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.training.study.conftest import result, toy_study
from training.study.parse import load_study
from training.study.plan import WaitingError, plan, run_settings, select_grid_point, study_seeds
from training.study.report import write_report


def grid_study(tmp_path: Path) -> Path:
    return toy_study(
        tmp_path,
        seeds=[1, 2],
        arms=[
            {"name": "uncertainty"},
            {"name": "grid", "grid": {"weights": {"semantic": [1], "depth": [1, 3]}, "seed": 1}},
            {"name": "best", "best_of": "grid"},
            {"name": "best_scaled", "best_of": "grid", "total_weight": "uncertainty"},
        ],
        comparisons=[],
        pilot={"arms": ["uncertainty"], "seeds": [1, 2], "seeds_if_over": [1, 2, 3]},
    )


def write_result(run_dir: Path, **fields: Any) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(fields))


def test_the_best_grid_point_is_chosen_on_validation_and_scaled_to_the_learned_total(tmp_path: Path) -> None:
    study = load_study(grid_study(tmp_path))
    runs = plan(study, study.seeds)
    assert [r.run_dir.relative_to(study.out).as_posix() for r in runs[:2]] == [
        "grid/semantic0.5_depth0.5/seed1",
        "grid/semantic0.25_depth0.75/seed1",
    ]
    best = next(r for r in runs if r.arm.name == "best")
    scaled = next(r for r in runs if r.arm.name == "best_scaled" and r.seed == 2)
    with pytest.raises(WaitingError, match="grid grid is not finished"):
        run_settings(study, best)
    # The second point is better on both tasks the grid weighs (its instance error, untrained, is worse).
    val = {"semantic_miou": 50, "instance_mean_error_px": 3.0, "inverse_depth_mean_error": 0.2}
    write_result(runs[0].run_dir, val=val)
    write_result(
        runs[1].run_dir,
        val=val | {"semantic_miou": 51, "inverse_depth_mean_error": 0.1, "instance_mean_error_px": 4.0},
    )
    selection = select_grid_point(study, study.arm("grid"))
    assert selection is not None
    assert selection["weights"] == {"semantic": 0.25, "depth": 0.75}
    assert selection["score"] == 1.0
    assert selection["scores"] == {"semantic0.5_depth0.5": 2.0, "semantic0.25_depth0.75": 1.0}
    assert run_settings(study, best) == {
        "loss.strategy": "fixed",
        "loss.weights": {"semantic": 0.25, "depth": 0.75},
    }
    # The grid's report: each point's validation and test figures, the chosen one marked, the plot.
    for run, miou in zip(runs[:2], (40.0, 45.0), strict=True):
        full = result("grid", 1, miou, 3.0, 0.1) | {"grid_point": run.grid_point}
        full["val"] = json.loads((run.run_dir / "result.json").read_text())["val"]
        (run.run_dir / "result.json").write_text(json.dumps(full))
    write_report(study)
    table = (study.out / "table.md").read_text()
    assert "| 0.25 / 0 / 0.75 **chosen** | 51.0 | 4.00 | 0.1000 | 1.00 | 45.0 |" in table
    assert (study.out / "grid_grid.png").stat().st_size > 1000
    with pytest.raises(WaitingError, match="uncertainty seed 2 is not finished"):
        run_settings(study, scaled)
    write_result(study.out / "uncertainty" / "seed2", mean_total_weight=20.0)
    weights = run_settings(study, scaled)["loss.weights"]
    assert weights == {"semantic": pytest.approx(5.0), "depth": pytest.approx(15.0)}


def test_a_finished_pilot_with_a_wide_spread_sets_the_study_seeds(tmp_path: Path) -> None:
    study = load_study(grid_study(tmp_path))
    assert study_seeds(study, print) == [1, 2]
    (study.out / "pilot").mkdir(parents=True)
    (study.out / "pilot" / "pilot.json").write_text(json.dumps({"seeds": [1, 2, 3]}))
    assert study_seeds(study, print) == [1, 2, 3]
