"""Reading a study file: the shipped configs build every arm; a bad key gets one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.training.study.conftest import REPO, toy_study
from training.study.cli import main
from training.study.config import StudyConfigError
from training.study.parse import load_study
from training.study.plan import plan


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
