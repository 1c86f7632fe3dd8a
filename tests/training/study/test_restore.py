"""``--restore``: runs finished elsewhere count as finished, unless trained or scored differently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.training.study.conftest import toy_study
from training.rate_matching import read_schedule
from training.study.advance import Budget
from training.study.cli import main
from training.study.parse import load_study
from training.study.run import run_study


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
    # The learned runs' weights and σ over training came along and are their log.csv again:
    # arms derived from them can go on here, and the σ plot is drawn.
    for seed in (1, 2):
        here, there = (folder / "uncertainty" / f"seed{seed}" / "log.csv" for folder in (out, toy_run["out"]))
        assert read_schedule(here) == read_schedule(there)
    assert (out / "sigma_uncertainty.png").is_file()
    assert not (out / "unweighted" / "seed1" / "log.csv").exists()  # fixed weights: no schedule
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


def test_derived_runs_listed_before_what_they_derive_from_are_restored_too(
    toy_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A results.json whose derived run comes before the learned run it reads (a grid's
    choice before its widened points, likewise): the restore takes it in a later round
    instead of refusing it because the learned run is not there yet."""
    scenes = {"root": str(toy_run["out"].parent / "scenes"), "train": 8, "val": 2}
    arms = [
        {"name": "learned", "overrides": {"loss.strategy": "uncertainty"}},
        {"name": "end_point", "from_learned": {"arm": "learned", "weights": "end_point"}},
    ]
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
    trained = toy_study(tmp_path / "first", scenes=scenes, seeds=[1], arms=arms, comparisons=[])
    assert main(["--config", str(trained)]) == 0
    report = json.loads((tmp_path / "first" / "study" / "results.json").read_text())
    report["results"].sort(key=lambda result: result["arm"] != "end_point")  # the derived run first
    assert [result["arm"] for result in report["results"]] == ["end_point", "learned"]
    source = tmp_path / "results.json"
    source.write_text(json.dumps(report))
    capsys.readouterr()
    moved = toy_study(tmp_path / "second", scenes=scenes, seeds=[1], arms=arms, comparisons=[])
    assert main(["--config", str(moved), "--restore", str(source), "--report"]) == 0
    assert f"restored 2 finished run(s) from {source}" in capsys.readouterr().out
    derived = json.loads((tmp_path / "second" / "study" / "end_point" / "seed1" / "result.json").read_text())
    assert derived["derived_weights"]["weights"] == report["results"][0]["derived_weights"]["weights"]
