"""Which runs the study trains, where each lives on disk, and the settings that wait on other runs.

Run ``k`` of arm ``a`` lives in ``<out>/<a>/seed<k>/`` (grid points in
``<out>/<grid>/<point>/seed<k>/``, pilot runs under ``<out>/pilot/``). A folder with
``result.json`` holds a finished run, one with ``failed.json`` a run whose loss went
non-finite.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scene_contract.model import TASKS
from training.study.config import TASK_METRICS, Arm, StudyConfig, training_config

RESULT = "result.json"
FAILED = "failed.json"
RUN_RECORD = "study_run.json"


class WaitingError(Exception):
    """A run's settings depend on runs that have not finished yet; the message says which."""


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


def point_label(point: dict[str, float]) -> str:
    """A grid point as a folder name: ``semantic0.5_instance0.05_depth0.45``."""
    return "_".join(f"{task}{point[task]:g}" for task in TASKS if task in point)


def plan(study: StudyConfig, seeds: list[int], pilot: bool = False) -> list[PlannedRun]:
    """Every run in the order it is tried: grid points first, then seed by seed, arm by arm.

    Seed-major order gives paired results across all arms early, so a study cut short
    still compares like with like.
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
        PlannedRun(
            arm, arm.grid.seed, study.out / arm.name / point_label(point) / f"seed{arm.grid.seed}", point
        )
        for arm in study.arms
        if arm.grid is not None
        for point in arm.grid.points()
    ]
    runs += [
        PlannedRun(arm, seed, study.out / arm.name / f"seed{seed}")
        for seed in seeds
        for arm in study.arms
        if arm.grid is None
    ]
    return runs


def study_seeds(study: StudyConfig, say: Callable[[str], None]) -> list[int]:
    """The study's seeds, or the pilot's larger set when the pilot found a wide spread."""
    decision = study.out / "pilot" / "pilot.json"
    if study.pilot is None or not decision.is_file():
        return study.seeds
    seeds: list[int] = json.loads(decision.read_text())["seeds"] or study.seeds
    if seeds != study.seeds:
        say(f"the pilot's mIoU spread is over its limit: using seeds {seeds} instead of {study.seeds}")
    return seeds


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def run_settings(study: StudyConfig, run: PlannedRun) -> dict[str, Any]:
    """The training overrides the run adds to its arm: grid weights, selected or scaled weights.

    Raises `WaitingError` while the runs they are read from are unfinished.
    """
    if run.grid_point is not None:
        return {"loss.strategy": "fixed", "loss.weights": run.grid_point}
    extra: dict[str, Any] = {}
    weights: dict[str, float] | None = None
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


def select_grid_point(study: StudyConfig, grid_arm: Arm) -> dict[str, Any] | None:
    """The grid point chosen on the validation split, or None while a grid run is unfinished.

    Failed points (non-finite loss) are out of the running. ``mean_rank``: each point
    is ranked on the metric of each task the grid weighs (1 = best; ties share the
    better rank) and the lowest mean rank wins; ties go to the earlier point in grid order.
    """
    assert grid_arm.grid is not None
    grid = grid_arm.grid
    candidates = []
    for point in grid.points():
        run_dir = study.out / grid_arm.name / point_label(point) / f"seed{grid.seed}"
        result = read_result(run_dir)
        if result is None:
            if (run_dir / FAILED).is_file():
                continue
            return None
        candidates.append((point, result["val"]))
    if not candidates:
        return None
    metrics = [TASK_METRICS[t] for t in TASKS if t in grid.weights]
    if grid.select != "mean_rank":
        metrics = [m for m in metrics if m[0] == grid.select]
    scores = []
    for _, val in candidates:
        ranks = []
        for key, _, higher in metrics:
            mine = val[key]
            better = sum(1 for _, other in candidates if (other[key] > mine if higher else other[key] < mine))
            ranks.append(1 + better)
        scores.append(statistics.fmean(ranks))
    best = min(range(len(candidates)), key=lambda i: scores[i])
    return {
        "weights": candidates[best][0],
        "select": grid.select,
        "score": scores[best],
        "scores": {point_label(p): s for (p, _), s in zip(candidates, scores, strict=True)},
    }
