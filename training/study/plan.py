"""Which runs the study trains, in which order, and the settings that wait on other runs.

Folders and the files that mark a run finished: `training.study.folders`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.study.config import Arm, StudyConfig, training_config
from training.study.derive import derived_weights
from training.study.folders import FAILED, RESULT, RUN_RECORD, WaitingError, point_label, read_result
from training.study.grid import grid_points, select_grid_point

# Re-exported: the rest of the study imports the run folders' vocabulary from here.
__all__ = [
    "FAILED",
    "RESULT",
    "RUN_RECORD",
    "PlannedRun",
    "WaitingError",
    "arm_order",
    "plan",
    "point_label",
    "read_result",
    "run_settings",
    "select_grid_point",
    "study_seeds",
]


@dataclass(frozen=True)
class PlannedRun:
    arm: Arm
    seed: int
    run_dir: Path
    grid_point: dict[str, float] | None = None
    pilot: bool = False

    @property
    def label(self) -> str:
        point = f" {point_label(self.grid_point)}" if self.grid_point else ""
        return f"{'pilot ' if self.pilot else ''}{self.arm.name}{point} seed {self.seed}"


def plan(study: StudyConfig, seeds: list[int], pilot: bool = False) -> list[PlannedRun]:
    """Every run in the order it is tried: grid points first, then seed by seed, arm by arm.

    Seed-major order gives paired results across all arms early, so a study cut short
    still compares like with like. Within a seed an arm comes after the arms its weights
    are read from (`arm_order`). A widened grid's added points join the plan once the
    runs that call for them are finished.
    """
    if pilot:
        assert study.pilot is not None
        root = study.out / "pilot"
        return [
            PlannedRun(study.arm(name), seed, root / name / f"seed{seed}", pilot=True)
            for seed in study.pilot.seeds
            for name in study.pilot.arms
        ]
    runs = [
        PlannedRun(arm, seed, study.out / arm.name / point_label(point) / f"seed{seed}", point)
        for arm in study.arms
        if arm.grid is not None
        for point in grid_points(study, arm)
        for seed in arm.grid.seeds
    ]
    runs += [
        PlannedRun(arm, seed, study.out / arm.name / f"seed{seed}")
        for seed in seeds
        for arm in arm_order(study)
        if seed in study.arm_seeds(arm, seeds)
    ]
    return runs


def arm_order(study: StudyConfig) -> list[Arm]:
    """The non-grid arms in config order, except that an arm follows every arm it reads weights from."""
    pending = [a for a in study.arms if a.grid is None]
    ordered: list[Arm] = []
    while pending:
        placed = {a.name for a in ordered}
        ready = next((a for a in pending if set(a.sources()) <= placed), pending[0])  # parse rules out cycles
        ordered.append(ready)
        pending.remove(ready)
    return ordered


def study_seeds(study: StudyConfig, say: Callable[[str], None]) -> list[int]:
    """The study's seeds, or the pilot's larger set when the pilot found a wide spread."""
    decision = study.out / "pilot" / "pilot.json"
    if study.pilot is None or not decision.is_file():
        return study.seeds
    seeds: list[int] = json.loads(decision.read_text())["seeds"] or study.seeds
    if seeds != study.seeds:
        say(f"the pilot's mIoU spread is over its limit: using seeds {seeds} instead of {study.seeds}")
    return seeds


def run_settings(study: StudyConfig, run: PlannedRun) -> dict[str, Any]:
    """The training overrides the run adds to its arm: grid weights, selected or scaled weights.

    Raises `WaitingError` while the runs they are read from are unfinished.
    """
    if run.grid_point is not None:
        return {"loss.strategy": "fixed", "loss.weights": run.grid_point}
    extra: dict[str, Any] = {}
    weights: dict[str, float] | None = None
    if run.arm.from_learned is not None:
        return {"loss.strategy": "fixed", "loss.weights": derivation(study, run)[0]}
    if run.arm.best_of is not None:
        grid_arm = study.arm(run.arm.best_of)
        selection = select_grid_point(study, grid_arm)
        if selection is None:
            raise WaitingError(f"the grid {grid_arm.name} is not finished")
        weights = selection["weights"]
        extra = {"loss.strategy": "fixed", "loss.weights": weights}
    total = run.arm.total_weight
    if total is not None:
        if weights is None:
            config = training_config(study, run.arm, {}, seed=run.seed, run_dir=run.run_dir)
            weights = dict(config.loss.weights)
        if isinstance(total, str):
            reference = read_result(study.out / total / f"seed{run.seed}")
            if reference is None:
                raise WaitingError(f"{total} seed {run.seed} is not finished")
            total = float(reference["mean_total_weight"])
        scale = total / sum(weights.values())
        extra = {"loss.strategy": "fixed", "loss.weights": {t: w * scale for t, w in weights.items()}}
    return extra


def derivation(study: StudyConfig, run: PlannedRun) -> tuple[dict[str, float], dict[str, Any]]:
    """A ``from_learned`` run's weights and where they came from (`training.study.derive`)."""
    base: dict[str, float] | None = None
    if run.arm.best_of is not None:
        selection = select_grid_point(study, study.arm(run.arm.best_of))
        if selection is None:
            raise WaitingError(f"the grid {run.arm.best_of} is not finished")
        base = dict(selection["weights"])
    elif run.arm.from_learned is not None and run.arm.from_learned.weights != "end_point":
        config = training_config(study, run.arm, {}, seed=run.seed, run_dir=run.run_dir)
        base = dict(config.loss.weights)
    return derived_weights(study, run.arm, run.seed, base)
