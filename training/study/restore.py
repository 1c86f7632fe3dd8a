"""``--restore``: go on from runs finished elsewhere, read back from their ``results.json``.

``runs/`` is not committed, so a new machine or a fresh clone starts with no finished
runs; the committed ``results.json`` of a study carries every finished run's result.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.study.config import StudyConfig, StudyConfigError, training_config
from training.study.plan import RESULT, PlannedRun, WaitingError, plan, read_result, run_settings, study_seeds
from training.study.score import write_schedule


def restore_results(study: StudyConfig, source: Path, say: Callable[[str], None]) -> int:
    """Seed the study's run folders from a ``results.json`` that `write_report` wrote elsewhere.

    Each result of ``source`` that matches a planned run (arm, seed, grid point, pilot or
    not) and agrees with this study on what makes runs comparable (the evaluation scenes,
    the number of steps, the loss strategy, the fixed weights) becomes that run's
    ``result.json``, marked with ``restored_from``; the run then counts as finished. A
    result that disagrees stops the restore with `StudyConfigError` (the ones before it,
    which agreed, stay). A pilot report also restores its seed decision. Runs already
    finished here are kept. A learned run's result carries its weights and σ over
    training (``schedule``), written back as its ``log.csv``, so arms derived from it
    and the σ plots go on here; other training logs do not travel. Returns the number
    of runs restored.
    """
    try:
        report = json.loads(source.read_text())
        results = report["results"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StudyConfigError(f"--restore: {source} is not a scene-study results.json ({error})") from error
    pilot = bool(report.get("pilot"))
    if pilot:
        _restore_pilot_decision(study, report["pilot"], say)
    seeds = [] if pilot else study_seeds(study, say)
    restored, left = 0, list(results)
    while left:
        # Rounds, until one restores nothing: a widened grid's added points are planned,
        # and a run whose weights come from other runs (the grid's choice, a learned run
        # of its seed) can be checked, only once those runs are restored.
        runs = plan(study, seeds, pilot)
        waiting: list[tuple[PlannedRun, WaitingError]] = []
        before, pending = restored, left
        left = []
        for result in pending:
            run = _planned(runs, result)
            if run is None:
                left.append(result)
            elif read_result(run.run_dir) is None:
                try:
                    extra = run_settings(study, run)  # grid, selected, scaled or derived weights
                except WaitingError as error:
                    waiting.append((run, error))
                    left.append(result)
                    continue
                _check_comparable(study, run, extra, result, source)
                _write_restored(run, result, source)
                restored += 1
        if restored == before:
            if waiting:
                blocked, reason = waiting[0]
                raise StudyConfigError(f"--restore: {blocked.label} cannot be checked: {reason}") from reason
            break
    for result in left:
        name = f"{'pilot ' if result['pilot'] else ''}{result['arm']} seed {result['seed']}"
        say(f"{name}: not a run of this study; skipped")
    say(f"restored {restored} finished run(s) from {source}")
    return restored


def _write_restored(run: PlannedRun, result: dict[str, Any], source: Path) -> None:
    """The run's ``result.json`` from ``result``, and a learned run's schedule as its ``log.csv``."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / RESULT).write_text(json.dumps(result | {"restored_from": str(source)}, indent=1))
    if result.get("schedule") and not (run.run_dir / "log.csv").is_file():
        write_schedule(result["schedule"], run.run_dir / "log.csv")


def _planned(runs: list[PlannedRun], result: dict[str, Any]) -> PlannedRun | None:
    key = (result["arm"], result["seed"], result["grid_point"], result["pilot"])
    return next((r for r in runs if (r.arm.name, r.seed, r.grid_point, r.pilot) == key), None)


def _restore_pilot_decision(study: StudyConfig, decision: dict[str, Any], say: Callable[[str], None]) -> None:
    """The pilot's seed decision, unless this study has one already: the study's seeds follow it."""
    target = study.out / "pilot" / "pilot.json"
    if decision.get("complete") and not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(decision, indent=1))
        say(f"restored the pilot's decision: seeds {decision['seeds']}")


def _check_comparable(
    study: StudyConfig, run: PlannedRun, extra: dict[str, Any], result: dict[str, Any], source: Path
) -> None:
    """`StudyConfigError` unless ``result`` was trained and scored as this study would train
    ``run`` with the settings ``extra`` (`run_settings`)."""
    config = training_config(study, run.arm, extra, seed=run.seed, run_dir=run.run_dir, pilot=run.pilot)
    ev = study.evaluation
    wanted_evaluation = {"split": ev.split, "seed": ev.seed, "count": ev.count}
    wanted = (wanted_evaluation, config.steps, config.loss.strategy)
    found = (result["evaluation"], result["steps"], result["strategy"])
    weights = dict(config.loss.weights) if config.loss.strategy == "fixed" else None
    same_weights = _same_weights(weights, result["fixed_weights"])
    if found != wanted or not same_weights:
        raise StudyConfigError(
            f"--restore: {run.label} in {source} was trained or scored differently (evaluation, steps, "
            f"strategy {found}, fixed weights {result['fixed_weights']}) from what this study asks for "
            f"({wanted}, {weights})"
        )


def _same_weights(ours: dict[str, float] | None, theirs: dict[str, float] | None) -> bool:
    """Equal fixed weights (both None for learned ones), up to the rounding of a JSON round trip."""
    if ours is None or theirs is None:
        return ours is theirs
    return ours.keys() == theirs.keys() and all(math.isclose(ours[t], theirs[t], rel_tol=1e-6) for t in ours)
