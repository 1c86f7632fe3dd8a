"""Reading a study file: the shipped configs build every arm; a bad key gets one clear error."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from tests.training.study.conftest import REPO, toy_study
from training.study.cli import main
from training.study.config import StudyConfigError
from training.study.parse import load_study
from training.study.plan import plan


# study_controls.yaml: the widened grid's first 4 points x 2 seeds, 3 arms x 4 seeds, 8 arms x 3
# seeds, 1 arm x 2 seeds.
@pytest.mark.parametrize(
    ("name", "runs"),
    [
        ("study.yaml", 6 + 10 * 3),
        ("study_paper.yaml", 6 + 10 * 3),
        ("study_controls.yaml", 8 + 3 * 4 + 8 * 3 + 2),
    ],
)
def test_the_shipped_study_configs_build_every_arm(name: str, runs: int, tmp_path: Path) -> None:
    study = load_study(REPO / "configs" / name)  # builds each arm's training config
    # Planned from an empty folder: finished grid runs in the repository's own runs/ would
    # widen the grid here.
    study = dataclasses.replace(study, out=tmp_path / "study")
    assert len(plan(study, study.seeds)) == runs
    assert study.evaluation.split == "test"
    assert (study.evaluation.seed, study.evaluation.count) == (1000, 500)
    assert study.overrides["optim.log_variance_grad_clip"] is None


LEARNED = {"name": "u", "overrides": {"loss.strategy": "uncertainty"}}
FIXED = {"name": "f", "overrides": {"loss.strategy": "fixed"}}


def derived(arm: str = "u", weights: str = "end_point") -> dict[str, Any]:
    """An arm with weights from ``arm``'s runs (and no fixed weights of its own)."""
    return {"name": "d", "from_learned": {"arm": arm, "weights": weights}}


def grid(**settings: Any) -> dict[str, Any]:
    return {"name": "g", "grid": {"weights": {"semantic": [1], "depth": [1, 3]}, **settings}}


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
        (
            {"arms": [{"name": "a", "from_learned": {"arm": "b", "weights": "end_point"}}]},
            "from_learned.arm: 'b' is not",
        ),
        (
            {"arms": [LEARNED, derived(weights="mean")]},
            "arms[1].from_learned.weights: expected one of end_point, rate_weighted",
        ),
        ({"arms": [FIXED, derived(arm="f")]}, "arms.d.from_learned.arm: 'f' has fixed weights"),
        (
            {"arms": [LEARNED, derived(weights="rate_matched")]},
            "rate_matched needs the arm's own fixed weights",
        ),
        (
            {"arms": [LEARNED | {"seeds": [1]}, derived() | {"seeds": [1, 2]}]},
            "'u' does not train seeds [2]",
        ),
        ({"arms": [LEARNED | {"seeds": [7]}]}, "arms.u.seeds: [7] are not all among the study's seeds"),
        ({"arms": [FIXED | {"from_learned": {"arm": "u"}}]}, "from_learned.weights: required"),
        ({"arms": [grid(seed=1, seeds=[1, 2])]}, "arms[0].grid: give seed (one) or seeds"),
        ({"arms": [grid(seeds=[1], widen={"factor": 1})]}, "grid.widen.factor: must be above 1"),
        (
            {"arms": [grid(seeds=[1], widen={"max_points": 1})]},
            "widen.max_points: 1 is below the grid's 2 points",
        ),
    ],
)
def test_a_bad_study_config_gives_one_clear_error(
    tmp_path: Path, changes: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "arms" in changes:
        changes = {"comparisons": []} | changes
    config = toy_study(tmp_path, **changes)
    with pytest.raises(
        StudyConfigError,
        match=re.escape(message),
    ):
        load_study(config)
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("scene-study: error: ")
