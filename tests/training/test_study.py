"""`scene-study`: arms over seeds, resumable, aggregated into a table."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from training.checkpoint import load_checkpoint
from training.study import (
    Budget,
    Comparison,
    Pilot,
    StudyConfigError,
    WaitingError,
    compare,
    load_study,
    main,
    pilot_decision,
    plan,
    run_settings,
    run_study,
    select_grid_point,
    study_seeds,
    summarise,
    t95,
    write_report,
)

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"


def toy_study(root: Path, **changes: Any) -> Path:
    """Two arms (unweighted, uncertainty), two seeds, two one-step chunks per run, 3 test scenes.

    Training reads 8 scenes (32x64) rendered once to disk, validation 2.
    """
    study: dict[str, Any] = {
        "base": str(SMOKE),
        # 32x64 rather than the smoke config's 64x128: a third of the training cost.
        "overrides": {"steps": 2, "checkpoint_every": 1, "data.height": 32, "data.width": 64},
        "out": str(root / "study"),
        "scenes": {"root": str(root / "scenes"), "train": 8, "val": 2},
        "seeds": [1, 2],
        "chunk_steps": 1,
        "evaluation": {"split": "test", "seed": 1000, "count": 3, "batch_size": 3},
        "arms": [
            {"name": "unweighted", "overrides": {"loss.strategy": "fixed"}},
            {"name": "uncertainty", "overrides": {"loss.strategy": "uncertainty"}},
        ],
        "comparisons": [{"arm": "uncertainty", "reference": "unweighted"}],
    }
    study |= changes
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


class ChunkBudget(Budget):
    """Spent after ``limit`` training chunks: an invocation cut short mid-study."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def exhausted(self) -> bool:
        return self.chunks >= self.limit


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The toy study cut after three chunks, then finished by a second call, then called a third time."""
    root = tmp_path_factory.mktemp("study")
    config = toy_study(root)
    out = root / "study"
    first_lines: list[str] = []
    done = run_study(load_study(config), ChunkBudget(3), say=first_lines.append)
    cut = {
        "done": done,
        "rendered": [line for line in first_lines if line.startswith("rendering")],
        "unweighted_result": (out / "unweighted" / "seed1" / "result.json").is_file(),
        "uncertainty_step": load_checkpoint(out / "uncertainty" / "seed1" / "last.pt")["step"],
        "uncertainty_result": (out / "uncertainty" / "seed1" / "result.json").is_file(),
    }
    finished_mtime = (out / "unweighted" / "seed1" / "result.json").stat().st_mtime_ns
    second_lines: list[str] = []
    second_done = run_study(load_study(config), Budget(), say=second_lines.append)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".pt", ".json")}
    third_lines: list[str] = []
    third_done = run_study(load_study(config), Budget(), say=third_lines.append)
    return {
        "out": out,
        "config": config,
        "cut": cut,
        "first": first_lines,
        "second": second_lines,
        "second_done": second_done,
        "third": third_lines,
        "third_done": third_done,
        "finished_mtime": finished_mtime,
        "mtimes": mtimes,
    }


def test_a_cut_study_keeps_finished_runs_and_the_interrupted_ones_checkpoint(toy_run: dict[str, Any]) -> None:
    cut = toy_run["cut"]
    assert not cut["done"]
    assert cut["rendered"] == [
        f"rendering 8 train scenes to {toy_run['out'].parent / 'scenes' / 'train'} (once)",
        f"rendering 2 val scenes to {toy_run['out'].parent / 'scenes' / 'val'} (once)",
    ]
    assert cut["unweighted_result"]  # seed 1 of the first arm: two chunks, then scored
    assert not cut["uncertainty_result"]  # one chunk of two
    assert cut["uncertainty_step"] == 1
    assert any("uncertainty seed 1: left for later (the budget ran out)" in line for line in toy_run["first"])


def test_the_second_call_resumes_the_interrupted_run_and_skips_the_finished_one(
    toy_run: dict[str, Any],
) -> None:
    out, lines = toy_run["out"], toy_run["second"]
    assert toy_run["second_done"]
    assert lines[0] == "1 of 4 runs finished; 3 to go"
    assert "uncertainty seed 1: resuming at step 1/2" in lines
    assert not any(line.startswith("unweighted seed 1:") for line in lines)
    assert not any(line.startswith("rendering") for line in lines)
    assert (out / "unweighted" / "seed1" / "result.json").stat().st_mtime_ns == toy_run["finished_mtime"]
    with (out / "uncertainty" / "seed1" / "log.csv").open() as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [1, 2]  # each step logged once
    for arm in ("unweighted", "uncertainty"):
        for seed in (1, 2):
            result = json.loads((out / arm / f"seed{seed}" / "result.json").read_text())
            assert (result["arm"], result["seed"], result["steps"]) == (arm, seed, 2)
            assert result["evaluation"] == {"split": "test", "seed": 1000, "count": 3}
            assert 0 <= result["test"]["semantic_miou"] <= 100


def test_a_third_call_trains_nothing(toy_run: dict[str, Any]) -> None:
    assert toy_run["third_done"]
    assert toy_run["third"] == ["4 of 4 runs finished; 0 to go"]
    for path, mtime in toy_run["mtimes"].items():
        if path.name not in ("results.json",):
            assert path.stat().st_mtime_ns == mtime, path


def test_the_table_holds_mean_and_std_over_seeds(toy_run: dict[str, Any]) -> None:
    out = toy_run["out"]
    report = json.loads((out / "results.json").read_text())
    assert len(report["results"]) == 4
    for row in report["table"]:
        values = [
            json.loads((out / row["arm"] / f"seed{s}" / "result.json").read_text())["test"]["semantic_miou"]
            for s in (1, 2)
        ]
        assert row["seeds"] == [1, 2]
        assert row["metrics"]["semantic_miou"]["mean"] == pytest.approx(statistics.fmean(values))
        assert row["metrics"]["semantic_miou"]["std"] == pytest.approx(statistics.stdev(values))
        expected = f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"
        assert f"| {row['arm']} |" in (out / "table.md").read_text()
        assert expected in (out / "table.md").read_text()
    assert "## uncertainty against unweighted" in (out / "table.md").read_text()
    assert (out / "sigma_uncertainty.png").stat().st_size > 1000


def test_scenes_rendered_for_another_study_are_refused(toy_run: dict[str, Any]) -> None:
    root = toy_run["out"].parent
    config = toy_study(root, scenes={"root": str(root / "scenes"), "train": 9, "val": 2})
    with pytest.raises(StudyConfigError, match="holds other scenes"):
        run_study(load_study(config), Budget(), say=lambda _: None)
    toy_study(root)


def test_scene_study_command_reports_and_exits_zero_when_done(
    toy_run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(toy_run["config"]), "--report"]) == 0
    assert "table.md" in capsys.readouterr().out


def test_a_study_moved_to_a_new_machine_goes_on_from_its_committed_results(
    toy_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--restore``: the finished runs of a results.json count as finished in a fresh folder."""
    source = toy_run["out"] / "results.json"
    scenes = {"root": str(toy_run["out"].parent / "scenes"), "train": 8, "val": 2}
    config = toy_study(tmp_path, scenes=scenes)
    assert main(["--config", str(config), "--restore", str(source), "--report"]) == 0
    assert f"restored 4 finished run(s) from {source}" in capsys.readouterr().out
    out = tmp_path / "study"
    restored = json.loads((out / "uncertainty" / "seed2" / "result.json").read_text())
    original = json.loads((toy_run["out"] / "uncertainty" / "seed2" / "result.json").read_text())
    assert restored == original | {"restored_from": str(source)}
    report = json.loads((out / "results.json").read_text())
    assert report["table"] == json.loads(source.read_text())["table"]
    assert f"4 run(s) were trained elsewhere and restored from {source}." in (out / "table.md").read_text()
    # No training log came along, so there is no σ plot to draw, and nothing is trained again.
    assert not (out / "sigma_uncertainty.png").exists()
    lines: list[str] = []
    assert run_study(load_study(config), Budget(), say=lines.append)
    assert lines == ["4 of 4 runs finished; 0 to go"]


def test_results_trained_differently_are_not_restored(
    toy_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = {"steps": 3, "checkpoint_every": 1, "data.height": 32, "data.width": 64}
    config = toy_study(tmp_path, overrides=overrides)
    assert main(["--config", str(config), "--restore", str(toy_run["out"] / "results.json")]) == 2
    error = capsys.readouterr().err
    assert "unweighted seed 1" in error and "trained or scored differently" in error
    assert not list((tmp_path / "study").rglob("result.json"))
    # The same schedule, but the unweighted arm now weighs two tasks: its results are not this arm's.
    halves = {"loss.strategy": "fixed", "loss.weights": {"semantic": 0.5, "depth": 0.5}}
    reweighted = toy_study(
        tmp_path,
        arms=[{"name": "unweighted", "overrides": halves}, {"name": "uncertainty", "overrides": {}}],
    )
    assert main(["--config", str(reweighted), "--restore", str(toy_run["out"] / "results.json")]) == 2
    error = capsys.readouterr().err
    assert "unweighted seed 1" in error and "{'depth': 0.5, 'semantic': 0.5})" in error
    assert not list((tmp_path / "study").rglob("result.json"))
    (tmp_path / "broken.json").write_text("{}")
    assert main(["--config", str(config), "--restore", str(tmp_path / "broken.json")]) == 2
    assert "is not a scene-study results.json" in capsys.readouterr().err


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_whose_study_died_stops_at_its_next_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed outright (SIGKILL), the study cannot tell its workers: each sees its parent change."""
    from training.study import pool

    monkeypatch.setattr(pool, "_parent_pid", os.getppid())
    assert not pool._WorkerBudget().exhausted()
    monkeypatch.setattr(pool, "_parent_pid", os.getppid() + 1)  # the parent it started under is gone
    assert pool._WorkerBudget().exhausted()


def test_killing_a_parallel_study_stops_its_workers_too(toy_run: dict[str, Any], tmp_path: Path) -> None:
    """SIGTERM to ``scene-study --jobs 2``: the workers stop after their chunk instead of
    training on alone (they used to outlive the parent and could race a restarted study)."""
    scenes = {"root": str(toy_run["out"].parent / "scenes"), "train": 8, "val": 2}
    overrides = {"steps": 200, "checkpoint_every": 1, "data.height": 32, "data.width": 64}
    arms = [{"name": "uncertainty", "overrides": {}}]
    config = toy_study(tmp_path, scenes=scenes, overrides=overrides, arms=arms, comparisons=[])
    command = [sys.executable, "-m", "training.study", "--config", str(config), "--jobs", "2"]
    log = tmp_path / "study.log"
    with log.open("w") as out:  # a file, not a pipe: a surviving worker must not block the test
        study = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while ": step 1/200" not in log.read_text():
            assert study.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        study.send_signal(signal.SIGTERM)
        assert study.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()
        assert "stopping (SIGTERM)" in log.read_text()
        # Nothing of the study's process group is left training.
        deadline = time.monotonic() + 10
        while _group_alive(study.pid):
            assert time.monotonic() < deadline, "a worker outlived the killed study"
            time.sleep(0.2)
    finally:
        if _group_alive(study.pid):
            os.killpg(study.pid, signal.SIGKILL)
    steps = [load_checkpoint(path)["step"] for path in (tmp_path / "study").rglob("last.pt")]
    assert steps and max(steps) < 200


# ---------------------------------------------------------------- arithmetic, selection, rules


def result(arm: str, seed: int, miou: float, instance: float, depth: float) -> dict[str, Any]:
    return {
        "arm": arm,
        "seed": seed,
        "grid_point": None,
        "strategy": "fixed",
        "tasks": ["semantic", "instance", "depth"],
        "fixed_weights": {"semantic": 1 / 3, "instance": 1 / 3, "depth": 1 / 3},
        "final_weights": None,
        "test": {
            "semantic_miou": miou,
            "instance_mean_error_px": instance,
            "inverse_depth_mean_error": depth,
        },
    }


def test_summary_is_the_mean_and_sample_std_over_seeds() -> None:
    results = [result("a", 1, 60, 4.0, 0.1), result("a", 2, 62, 5.0, 0.1), result("a", 3, 64, 6.0, 0.1)]
    (row,) = summarise(results, ["a"])
    assert row["seeds"] == [1, 2, 3]
    assert row["metrics"]["semantic_miou"] == {"mean": 62.0, "std": pytest.approx(2.0)}
    assert row["metrics"]["instance_mean_error_px"] == {"mean": 5.0, "std": pytest.approx(1.0)}
    assert row["metrics"]["inverse_depth_mean_error"]["std"] == pytest.approx(0.0, abs=1e-12)
    (single,) = summarise([result("b", 1, 50, 1, 1)], ["b"])
    assert single["metrics"]["semantic_miou"] == {"mean": 50.0, "std": None}


def test_non_inferiority_uses_the_paired_one_sided_bound() -> None:
    arm = {1: {"semantic_miou": 61.0, "instance_mean_error_px": 1.0}, 2: {"semantic_miou": 63.0}}
    arm[2]["instance_mean_error_px"] = 1.0
    arm[3] = {"semantic_miou": 62.0, "instance_mean_error_px": 1.0}
    reference = {
        s: {"semantic_miou": m, "instance_mean_error_px": 1.0} for s, m in ((1, 60), (2, 62), (3, 64))
    }
    rows = {r["metric"]: r for r in compare(arm, reference, Comparison("a", "r", 1.5, 0.05))}
    # Paired differences 1, 1, -2: mean 0, sd sqrt(3); bound 0 - 2.920 * sqrt(3) / sqrt(3) = -2.920.
    assert rows["semantic_miou"]["bound"] == pytest.approx(-2.920)
    assert rows["semantic_miou"]["holds"] is False
    assert compare(arm, reference, Comparison("a", "r", 3.0, 0.05))[0]["holds"] is True
    # Errors equal: 1 - 1.05 * 1 = -0.05 every seed, no spread, so the bound is -0.05 < 0.
    assert rows["instance_mean_error_px"]["bound"] == pytest.approx(-0.05)
    assert rows["instance_mean_error_px"]["holds"] is True
    assert compare(arm, reference, Comparison("a", "r", 1.5, 0.0))[1]["holds"] is False
    one_seed = compare({1: arm[1]}, {1: reference[1]}, Comparison("a", "r"))
    assert one_seed[0]["holds"] is None


def test_t_quantiles_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 30):
        assert t95(df) == pytest.approx(stats.t.ppf(0.95, df), abs=1e-3)


def test_pilot_rule_asks_for_more_seeds_when_the_miou_spread_is_wide() -> None:
    pilot = Pilot(["u", "w"], [1, 2], {}, 1.0, [1, 2, 3, 4, 5])
    rows = summarise([result("u", 1, 60, 1, 1), result("u", 2, 62, 1, 1)], ["u"])  # std 1.41
    assert pilot_decision(pilot, rows, True)["seeds"] == [1, 2, 3, 4, 5]
    rows = summarise([result("u", 1, 60, 1, 1), result("u", 2, 61, 1, 1)], ["u"])  # std 0.71
    assert pilot_decision(pilot, rows, True) | {"miou_std": None} == {
        "complete": True,
        "miou_std": None,
        "miou_std_limit": 1.0,
        "over_limit": False,
        "seeds": None,
    }


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


@pytest.mark.parametrize(("name", "runs"), [("study.yaml", 6 + 10 * 3), ("study_paper.yaml", 6 + 10 * 3)])
def test_the_shipped_study_configs_build_every_arm(name: str, runs: int) -> None:
    study = load_study(REPO / "configs" / name)  # builds each arm's training config
    assert len(plan(study, study.seeds)) == runs
    assert study.evaluation.split == "test"
    assert (study.evaluation.seed, study.evaluation.count) == (1000, 500)
    assert study.overrides["optim.log_variance_grad_clip"] is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arms": []}, "arms: expected a non-empty list"),
        ({"seeds": [1, 1]}, "seeds: duplicate seeds"),
        ({"colour": "red"}, "study.colour: unknown key"),
        ({"arms": [{"name": "a"}, {"name": "a"}]}, "arms: two arms are named 'a'"),
        ({"arms": [{"name": "a", "best_of": "g"}]}, "arms.a.best_of: 'g' is not a grid arm"),
        ({"arms": [{"name": "a", "overrides": {"optim.lr": -1}}]}, "arms.a: optim.lr: must be positive"),
        ({"arms": [{"name": "a", "overrides": {"loss.colour": 1}}]}, "arms.a: loss.colour: unknown key"),
        ({"arms": [{"name": "a/b"}]}, "arms[0].name: expected a folder-safe name"),
        ({"comparisons": [{"arm": "x", "reference": "unweighted"}]}, "comparisons[0].arm: 'x' is not"),
        ({"base": "nowhere.yaml"}, "base: "),
        ({"pilot": {"arms": ["unweighted"], "seeds": [1]}}, "pilot.seeds_if_over: required"),
    ],
)
def test_a_bad_study_config_gives_one_clear_error(
    tmp_path: Path, changes: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "arms" in changes:
        changes = {"comparisons": []} | changes
    config = toy_study(tmp_path, **changes)
    with pytest.raises(StudyConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_study(config)
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("scene-study: error: ")


def test_a_run_started_under_another_config_is_not_resumed_into_a_mixture(tmp_path: Path) -> None:
    config = toy_study(
        tmp_path,
        seeds=[1],
        comparisons=[],
        arms=[{"name": "unweighted", "overrides": {"loss.strategy": "fixed"}}],
    )
    run_study(load_study(config), ChunkBudget(1), say=lambda _: None)
    changed = toy_study(
        tmp_path,
        seeds=[1],
        comparisons=[],
        arms=[{"name": "unweighted", "overrides": {"loss.strategy": "fixed", "optim.lr": 0.5}}],
    )
    with pytest.raises(StudyConfigError, match=r"different training config \(differs in: optim\)"):
        run_study(load_study(changed), Budget(), say=lambda _: None)


def test_two_jobs_train_every_run_once_in_worker_processes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "study"
    # A run folder started under another config: the worker's error ends the study.
    started_elsewhere = out / "unweighted" / "seed1" / "study_run.json"
    started_elsewhere.parent.mkdir(parents=True)
    started_elsewhere.write_text(json.dumps({"config": {}, "train_seconds": 0.0}))
    unweighted_only = [{"name": "unweighted", "overrides": {"loss.strategy": "fixed"}}]
    config = toy_study(tmp_path, seeds=[1], arms=unweighted_only, comparisons=[])
    assert main(["--config", str(config), "--jobs", "2"]) == 2
    assert "different training config" in capfd.readouterr().err

    started_elsewhere.unlink()
    config = toy_study(tmp_path, seeds=[1])  # two runs: one for each worker
    assert main(["--config", str(config), "--jobs", "2"]) == 0
    printed = capfd.readouterr().out  # the workers' lines come from other processes
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # the cores this process may use
    assert f"training 2 runs at once, {threads} torch thread(s) each" in printed
    for arm in ("unweighted", "uncertainty"):
        run_dir = out / arm / "seed1"
        result = json.loads((run_dir / "result.json").read_text())
        assert (result["arm"], result["seed"], result["steps"]) == (arm, 1, 2)
        with (run_dir / "log.csv").open() as f:
            assert [int(row["step"]) for row in csv.DictReader(f)] == [1, 2]
        # The workers print their progress themselves.
        assert f"{arm} seed 1: finished; test" in printed
    assert (out / "table.md").is_file()


def test_jobs_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(toy_study(tmp_path)), "--jobs", "0"]) == 2
    assert "scene-study: error: --jobs: must be positive, got 0" in capsys.readouterr().err


def test_no_run_starts_that_could_take_the_study_past_max_runs() -> None:
    budget = Budget(max_runs=2)
    assert budget.allows_another(in_flight=0) and budget.allows_another(in_flight=1)
    assert not budget.allows_another(in_flight=2)  # a third start could finish a third run
    budget.finished = 1
    assert budget.allows_another(in_flight=0) and not budget.allows_another(in_flight=1)
    assert Budget().allows_another(in_flight=8)
    assert not Budget(max_minutes=1, started=-1e9).allows_another(in_flight=0)  # the deadline passed


def test_delta_m_and_mean_rank_by_hand() -> None:
    from training.study import multitask_scores

    def row(arm: str, **means: float) -> dict[str, object]:
        return {"arm": arm, "metrics": {k: {"mean": v, "std": None} for k, v in means.items()}}

    rows = [
        row("semantic_only", semantic_miou=50.0),
        row("instance_only", instance_mean_error_px=2.0),
        row("depth_only", inverse_depth_mean_error=0.02),
        # mIoU 10% worse, instance error 10% better, depth 40% worse: Δm = (10 - 10 + 40) / 3.
        row("a", semantic_miou=45.0, instance_mean_error_px=1.8, inverse_depth_mean_error=0.028),
        row("b", semantic_miou=55.0, instance_mean_error_px=2.2, inverse_depth_mean_error=0.02),
        row("pair", semantic_miou=50.0, instance_mean_error_px=3.0),
    ]
    scores = multitask_scores(rows)
    assert scores["a"]["delta_m_percent"] == pytest.approx(40 / 3)
    assert scores["b"]["delta_m_percent"] == pytest.approx((-10 + 10 + 0) / 3)
    assert (
        scores["pair"]["delta_m_percent"] == pytest.approx((0 + 50) / 2)
        and scores["pair"]["mean_rank"] is None
    )
    # a: ranks 2, 1, 2; b: 1, 2, 1.
    assert scores["a"]["mean_rank"] == pytest.approx(5 / 3) and scores["b"]["mean_rank"] == pytest.approx(
        4 / 3
    )
    assert set(scores) == {"a", "b", "pair"}
