"""`run_study`: a study cut short keeps what it finished, goes on, and then trains nothing."""

from __future__ import annotations

import csv
import json
from typing import Any

import pytest

from tests.training.study.conftest import toy_study
from training.study.advance import Budget
from training.study.config import StudyConfigError
from training.study.parse import load_study
from training.study.run import run_study


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


def test_scenes_rendered_for_another_study_are_refused(toy_run: dict[str, Any]) -> None:
    root = toy_run["out"].parent
    config = toy_study(root, scenes={"root": str(root / "scenes"), "train": 9, "val": 2})
    with pytest.raises(StudyConfigError, match="holds other scenes"):
        run_study(load_study(config), Budget(), say=lambda _: None)
    toy_study(root)
