"""One invocation of the study: render its scenes, train what the budget allows, write the report."""

from __future__ import annotations

import json
from collections.abc import Callable

from training.data.sample import DataConfigError
from training.study.advance import Budget
from training.study.config import StudyConfig, StudyConfigError, training_config
from training.study.plan import FAILED, PlannedRun, WaitingError, plan, read_result, run_settings, study_seeds
from training.study.pool import run_in_parallel, run_in_turn
from training.study.report import write_report


def run_study(
    study: StudyConfig,
    budget: Budget,
    *,
    pilot: bool = False,
    say: Callable[[str], None] = print,
    jobs: int = 1,
) -> bool:
    """Train and score every unfinished run the budget allows, then write the report.

    With ``jobs`` > 1, that many runs train at once in worker processes (`run_in_parallel`).
    Returns True when every run of the study (or the pilot) is finished or failed.
    """
    if pilot and study.pilot is None:
        raise StudyConfigError("--pilot: the study config has no pilot section")
    render_scenes(study, say)
    seeds = [] if pilot else study_seeds(study, say)
    runs = plan(study, seeds, pilot)
    pending = _unfinished(runs)
    say(f"{len(runs) - len(pending)} of {len(runs)} runs finished; {len(pending)} to go")
    while True:
        if jobs > 1:
            run_in_parallel(study, pending, budget, jobs, say)
        else:
            run_in_turn(study, pending, budget, say)
        # A widened grid's new points join the plan once the runs that call for them are finished.
        known = {run.run_dir for run in runs}
        runs = plan(study, seeds, pilot)
        added = [run for run in _unfinished(runs) if run.run_dir not in known]
        if not added or budget.exhausted():
            break
        say(f"{len(added)} run(s) added to the plan: {', '.join(run.label for run in added)}")
        pending += added
    for run in pending:
        try:
            run_settings(study, run)
            reason = "the budget ran out" if budget.exhausted() else "not run"
        except WaitingError as waiting:
            reason = str(waiting)
        say(f"{run.label}: left for later ({reason})")
    write_report(study, pilot=pilot)
    return not pending


def _unfinished(runs: list[PlannedRun]) -> list[PlannedRun]:
    return [r for r in runs if read_result(r.run_dir) is None and not (r.run_dir / FAILED).is_file()]


def render_scenes(study: StudyConfig, say: Callable[[str], None]) -> None:
    """Render the study's scene folders unless they are there already (and match)."""
    from training.data.cli import main as scene_data

    if study.scenes is None:
        return
    scenes = study.scenes
    data = training_config(study, study.arms[0], {}, seed=0, run_dir=study.out).data
    for split, count in (("train", scenes.train), ("val", scenes.val)):
        folder = scenes.root / split
        wanted = {"split": split, "seed": scenes.seed, "height": data.height, "width": data.width}
        wanted |= {"first": 0, "count": count}
        manifest = folder / "manifest.json"
        if manifest.is_file():
            settings = json.loads(manifest.read_text())["settings"]
            if settings != wanted:
                raise StudyConfigError(
                    f"scenes: {folder} holds other scenes ({settings}) than the study asks for ({wanted}); "
                    "delete it to render again"
                )
            continue
        say(f"rendering {count} {split} scenes to {folder} (once)")
        args = [
            "render",
            "--out",
            str(folder),
            "--split",
            split,
            "--count",
            str(count),
            "--seed",
            str(scenes.seed),
        ]
        args += ["--height", str(data.height), "--width", str(data.width), "--workers", str(scenes.workers)]
        if scene_data(args) != 0:
            raise DataConfigError(f"scenes: rendering {folder} failed")
