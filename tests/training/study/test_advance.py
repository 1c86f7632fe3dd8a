"""One run at a time: a changed config is refused, and the budget caps the runs started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.study.conftest import ChunkBudget, toy_study
from training.study.advance import Budget
from training.study.config import StudyConfigError
from training.study.parse import load_study
from training.study.plan import RUN_RECORD
from training.study.run import run_study


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


def test_a_run_started_before_a_setting_existed_resumes_when_it_keeps_its_default(tmp_path: Path) -> None:
    """A setting added since a run started (e.g. model.aspp_dropout) is no change at its default."""
    arms = [{"name": "unweighted", "overrides": {"loss.strategy": "fixed"}}]
    study = load_study(toy_study(tmp_path, seeds=[1], comparisons=[], arms=arms))
    run_study(study, ChunkBudget(1), say=lambda _: None)  # one chunk: the run is half done
    (record_path,) = Path(study.out).rglob(RUN_RECORD)
    record = json.loads(record_path.read_text())
    del record["config"]["model"]["aspp_dropout"]  # as written before the setting existed
    record_path.write_text(json.dumps(record))

    # The setting at another value than its default is a change, refused as before...
    changed = [{"name": "unweighted", "overrides": {"loss.strategy": "fixed", "model.aspp_dropout": 0.0}}]
    other = load_study(toy_study(tmp_path, seeds=[1], comparisons=[], arms=changed))
    with pytest.raises(StudyConfigError, match=r"different training config \(differs in: model\)"):
        run_study(other, Budget(), say=lambda _: None)
    # ... and at its default, the run goes on and finishes.
    assert run_study(study, Budget(), say=lambda _: None)


def test_no_run_starts_that_could_take_the_study_past_max_runs() -> None:
    budget = Budget(max_runs=2)
    assert budget.allows_another(in_flight=0) and budget.allows_another(in_flight=1)
    assert not budget.allows_another(in_flight=2)  # a third start could finish a third run
    budget.finished = 1
    assert budget.allows_another(in_flight=0) and not budget.allows_another(in_flight=1)
    assert Budget().allows_another(in_flight=8)
    assert not Budget(max_minutes=1, started=-1e9).allows_another(in_flight=0)  # the deadline passed
