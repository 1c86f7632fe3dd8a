"""`scene-study`: the paper's Table 1 on this project's data, in one resumable command.

    scene-study --config configs/study.yaml [--max-minutes M] [--max-runs N] [--jobs J]
    scene-study --config configs/study.yaml --pilot      # the seed-spread pilot first
    scene-study --config configs/study.yaml --report     # only (re)write the table and plots
    scene-study --config configs/study.yaml --restore results.json  # go on from runs finished elsewhere

A study config names a base training config with overrides, the seeds and the arms
(single task, unweighted, a fixed-weight grid, the grid's best weights, learned
uncertainty, ...). Every arm trains the same model on the same data with the same
schedule and is scored on the same held-out scenes. Run ``k`` of arm ``a`` lives in
``<out>/<a>/seed<k>/`` (grid points in ``<out>/<grid>/<point>/seed<k>/``): a run with
``result.json`` is finished and skipped, one with ``last.pt`` resumes from it, and each
invocation trains in chunks of ``chunk_steps`` so a time budget can stop it between
chunks. ``--jobs J`` trains J runs at once, each in its own process with a share of
the cores (on a small CPU model two one-thread runs train faster together than one
two-thread run: docs/study.md). The results are then gathered into ``results.json`` (every run's raw numbers),
``table.md`` (mean ± std over seeds, comparisons) and plots, all in ``<out>``.

See docs/study.md for the arms, the fairness choices and the tests.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import torch
import yaml

from scene_contract.model import TASKS
from training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    weighting_from_checkpoint,
)
from training.config import ConfigError, TrainConfig, load_config, to_dict
from training.data.procedural import SPLITS, ProceduralScenes
from training.data.sample import DataConfigError
from training.evaluate import evaluate
from training.train import setup_placement, train
from training.weighting import NonFiniteLossError, likelihood_scale

# The metric of each task in the table: (result key, label, higher is better).
TASK_METRICS: dict[str, tuple[str, str, bool]] = {
    "semantic": ("semantic_miou", "mIoU %", True),
    "instance": ("instance_mean_error_px", "instance error px", False),
    "depth": ("inverse_depth_mean_error", "inverse-depth error 1/m", False),
}
RESULT = "result.json"
FAILED = "failed.json"
RUN_RECORD = "study_run.json"

# One-sided 95% quantiles of Student's t for 1..30 degrees of freedom; beyond 30 the
# value for 30 is used, slightly wider than the exact one.
_T95 = (
    6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812,
    1.796, 1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725,
    1.721, 1.717, 1.714, 1.711, 1.708, 1.706, 1.703, 1.701, 1.699, 1.697,
)  # fmt: skip


class StudyConfigError(ValueError):
    """The study config is invalid; the message names the key."""


# ---------------------------------------------------------------- the study config


@dataclass(frozen=True)
class Grid:
    """A fixed-weight grid: every combination of the per-task values, trained with one seed.

    ``normalise``: each combination is scaled to sum 1 (as the paper's weights do), and
    combinations that are multiples of one another are trained once. ``select``: how
    the best point is chosen on the validation split: ``mean_rank`` (the lowest mean of
    its ranks on the three task metrics) or one metric key of `TASK_METRICS`.
    """

    weights: dict[str, list[float]]
    seed: int
    select: str = "mean_rank"
    normalise: bool = True

    def points(self) -> list[dict[str, float]]:
        tasks = list(self.weights)
        points: list[dict[str, float]] = []
        for values in product(*(self.weights[t] for t in tasks)):
            total = sum(values) if self.normalise else 1.0
            # Three significant digits: readable folder names, and sums within 0.1% of 1.
            point = {t: float(f"{v / total:.3g}") for t, v in zip(tasks, values, strict=True)}
            if point not in points:
                points.append(point)
        return points


@dataclass(frozen=True)
class Arm:
    """One arm of the study.

    Plain: trains ``overrides`` over the study's seeds. ``grid``: trains every grid
    point with the grid's seed. ``best_of``: the named grid arm's selected weights over
    the study's seeds. ``total_weight``: fixed weights scaled so that they sum to this
    number, or to the total weight that the named arm applied (its Σ_i weight_i averaged
    over training, from its ``log.csv``, in the run with the same seed).
    """

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: Grid | None = None
    best_of: str | None = None
    total_weight: float | str | None = None


@dataclass(frozen=True)
class Comparison:
    """``arm`` against ``reference`` over paired seeds: non-inferior within the margins.

    mIoU holds when the one-sided 95% lower bound of the mean paired difference is above
    ``-miou_points``; an error holds when the upper bound of ``arm - (1 + relative_error)
    · reference`` is below 0. Margins of 0 make it a test of being better.
    """

    arm: str
    reference: str
    miou_points: float = 1.5
    relative_error: float = 0.05


@dataclass(frozen=True)
class Pilot:
    """Arms trained with a few seeds and a short schedule to measure the spread between seeds.

    If any pilot arm's mIoU standard deviation exceeds ``miou_std_limit`` points, the
    study uses ``seeds_if_over`` instead of its ``seeds``.
    """

    arms: list[str]
    seeds: list[int]
    overrides: dict[str, Any]
    miou_std_limit: float
    seeds_if_over: list[int]


@dataclass(frozen=True)
class Evaluation:
    """The held-out scenes every run is scored on: procedural ``split`` of ``seed``."""

    split: str = "test"
    seed: int = 1000
    count: int = 500
    batch_size: int = 16


@dataclass(frozen=True)
class Scenes:
    """Procedural scenes rendered once to ``root/train`` and ``root/val``; training reads them."""

    root: Path
    train: int
    val: int
    seed: int = 0
    workers: int = 1


@dataclass(frozen=True)
class StudyConfig:
    path: Path
    base: Path
    overrides: dict[str, Any]
    out: Path
    seeds: list[int]
    chunk_steps: int
    evaluation: Evaluation
    arms: list[Arm]
    comparisons: list[Comparison]
    pilot: Pilot | None
    scenes: Scenes | None

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)


def _mapping(value: Any, key: str, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StudyConfigError(f"{key}: expected a mapping, got {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise StudyConfigError(f"{key}.{unknown[0]}: unknown key; valid keys here: {', '.join(allowed)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise StudyConfigError(f"{key}.{missing[0]}: required")
    return value


def _int(value: Any, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StudyConfigError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise StudyConfigError(f"{key}: expected a number >= 0, got {value!r}")
    return float(value)


def _seeds(value: Any, key: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise StudyConfigError(f"{key}: expected a non-empty list of seeds, got {value!r}")
    seeds = [_int(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if len(set(seeds)) != len(seeds):
        raise StudyConfigError(f"{key}: duplicate seeds in {seeds}")
    return seeds


def _overrides(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise StudyConfigError(f"{key}: expected a mapping of dotted training keys to values, got {value!r}")
    return dict(value)


def as_overrides(values: dict[str, Any]) -> list[str]:
    """``{"loss.weights": {"semantic": 1}}`` -> ``['loss.weights={"semantic": 1}']`` for `load_config`.

    JSON is valid YAML, so each value reads back exactly as it was written.
    """
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def _grid(value: Any, key: str) -> Grid:
    data = _mapping(value, key, ("weights", "seed", "select", "normalise"), ("weights", "seed"))
    weights = _mapping(data["weights"], f"{key}.weights", TASKS)
    if not weights:
        raise StudyConfigError(f"{key}.weights: give each task's list of weights")
    parsed: dict[str, list[float]] = {}
    for task, values in weights.items():
        if not isinstance(values, list) or not values:
            raise StudyConfigError(f"{key}.weights.{task}: expected a non-empty list, got {values!r}")
        parsed[task] = [_number(v, f"{key}.weights.{task}[{i}]") for i, v in enumerate(values)]
    select = data.get("select", "mean_rank")
    metrics = [m for m, _, _ in TASK_METRICS.values()]
    if select != "mean_rank" and select not in metrics:
        raise StudyConfigError(
            f"{key}.select: expected mean_rank or one of {', '.join(metrics)}, got {select!r}"
        )
    normalise = data.get("normalise", True)
    if not isinstance(normalise, bool):
        raise StudyConfigError(f"{key}.normalise: expected true or false, got {normalise!r}")
    if any(sum(values) == 0 for values in product(*parsed.values())):
        raise StudyConfigError(f"{key}.weights: a combination has every weight 0")
    return Grid(parsed, _int(data["seed"], f"{key}.seed"), select, normalise)


def _arm(value: Any, key: str) -> Arm:
    data = _mapping(value, key, ("name", "overrides", "grid", "best_of", "total_weight"), ("name",))
    name = data["name"]
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise StudyConfigError(
            f"{key}.name: expected a folder-safe name (letters, digits, _ -), got {name!r}"
        )
    if "grid" in data and "best_of" in data:
        raise StudyConfigError(f"{key}: an arm has either grid or best_of, not both")
    total = data.get("total_weight")
    if total is not None and not isinstance(total, str):
        total = _number(total, f"{key}.total_weight")
        if total == 0:
            raise StudyConfigError(f"{key}.total_weight: must be positive")
    return Arm(
        name=name,
        overrides=_overrides(data.get("overrides"), f"{key}.overrides"),
        grid=_grid(data["grid"], f"{key}.grid") if "grid" in data else None,
        best_of=data.get("best_of"),
        total_weight=total,
    )


def load_study(path: str | Path) -> StudyConfig:
    """Read and check a study config; `StudyConfigError` names the first bad key.

    ``base`` is relative to the study file; ``out`` and ``scenes.root`` to the working
    directory, like scene-train's ``run_dir``. Every arm's training config is built
    here once, so a bad override stops the study before any training.
    """
    path = Path(path)
    if not path.is_file():
        raise StudyConfigError(f"--config: {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise StudyConfigError(f"--config: {path} is not valid YAML: {error}") from None
    top = ("base", "overrides", "out", "seeds", "chunk_steps", "evaluation", "arms", "comparisons")
    data = _mapping(raw, "study", (*top, "pilot", "scenes"), ("base", "out", "seeds", "arms"))
    base = path.parent / str(data["base"])
    if not base.is_file():
        raise StudyConfigError(f"base: {base} not found")
    evaluation_data = _mapping(
        data.get("evaluation", {}), "evaluation", ("split", "seed", "count", "batch_size")
    )
    evaluation = Evaluation(
        split=str(evaluation_data.get("split", "test")),
        seed=_int(evaluation_data.get("seed", 1000), "evaluation.seed"),
        count=_int(evaluation_data.get("count", 500), "evaluation.count", 1),
        batch_size=_int(evaluation_data.get("batch_size", 16), "evaluation.batch_size", 1),
    )
    if evaluation.split not in SPLITS:
        raise StudyConfigError(
            f"evaluation.split: expected one of {', '.join(SPLITS)}, got {evaluation.split!r}"
        )
    if not isinstance(data["arms"], list) or not data["arms"]:
        raise StudyConfigError("arms: expected a non-empty list of arms")
    arms = [_arm(a, f"arms[{i}]") for i, a in enumerate(data["arms"])]
    names = [a.name for a in arms]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise StudyConfigError(f"arms: two arms are named {duplicate!r}")
    grids = [a.name for a in arms if a.grid is not None]
    for arm in arms:
        if arm.best_of is not None and arm.best_of not in grids:
            raise StudyConfigError(
                f"arms.{arm.name}.best_of: {arm.best_of!r} is not a grid arm "
                f"(grid arms: {', '.join(grids) or 'none'})"
            )
        if isinstance(arm.total_weight, str) and (
            arm.total_weight not in names or arm.total_weight == arm.name
        ):
            raise StudyConfigError(f"arms.{arm.name}.total_weight: {arm.total_weight!r} is not another arm")
    comparisons = []
    for i, item in enumerate(data.get("comparisons") or []):
        key = f"comparisons[{i}]"
        entry = _mapping(
            item, key, ("arm", "reference", "miou_points", "relative_error"), ("arm", "reference")
        )
        for role in ("arm", "reference"):
            if entry[role] not in names or entry[role] in grids:
                raise StudyConfigError(f"{key}.{role}: {entry[role]!r} is not a (non-grid) arm")
        comparisons.append(
            Comparison(
                entry["arm"],
                entry["reference"],
                _number(entry.get("miou_points", 1.5), f"{key}.miou_points"),
                _number(entry.get("relative_error", 0.05), f"{key}.relative_error"),
            )
        )
    pilot = None
    if data.get("pilot") is not None:
        pilot_keys = ("arms", "seeds", "overrides", "miou_std_limit", "seeds_if_over")
        entry = _mapping(data["pilot"], "pilot", pilot_keys, ("arms", "seeds", "seeds_if_over"))
        if not isinstance(entry["arms"], list) or not entry["arms"]:
            raise StudyConfigError("pilot.arms: expected a non-empty list of arm names")
        for name in entry["arms"]:
            found = next((a for a in arms if a.name == name), None)
            if found is None or found.grid or found.best_of or isinstance(found.total_weight, str):
                raise StudyConfigError(
                    f"pilot.arms: {name!r} is not a plain arm (no grid, best_of or arm reference)"
                )
        pilot = Pilot(
            arms=list(entry["arms"]),
            seeds=_seeds(entry["seeds"], "pilot.seeds"),
            overrides=_overrides(entry.get("overrides"), "pilot.overrides"),
            miou_std_limit=_number(entry.get("miou_std_limit", 1.0), "pilot.miou_std_limit"),
            seeds_if_over=_seeds(entry["seeds_if_over"], "pilot.seeds_if_over"),
        )
    scenes = None
    if data.get("scenes") is not None:
        entry = _mapping(
            data["scenes"], "scenes", ("root", "train", "val", "seed", "workers"), ("root", "train", "val")
        )
        scenes = Scenes(
            root=Path(str(entry["root"])),
            train=_int(entry["train"], "scenes.train", 1),
            val=_int(entry["val"], "scenes.val", 1),
            seed=_int(entry.get("seed", 0), "scenes.seed"),
            workers=_int(entry.get("workers", 1), "scenes.workers", 1),
        )
    study = StudyConfig(
        path=path,
        base=base,
        overrides=_overrides(data.get("overrides"), "overrides"),
        out=Path(str(data["out"])),
        seeds=_seeds(data["seeds"], "seeds"),
        chunk_steps=_int(data.get("chunk_steps", 250), "chunk_steps", 1),
        evaluation=evaluation,
        arms=arms,
        comparisons=comparisons,
        pilot=pilot,
        scenes=scenes,
    )
    for arm in arms:
        _check_arm(study, arm)
    return study


def _check_arm(study: StudyConfig, arm: Arm) -> None:
    """Build the arm's training config (with stand-in weights where they come from results)."""
    points = arm.grid.points() if arm.grid else [None]
    for point in points:
        extra = {"loss.strategy": "fixed", "loss.weights": point} if point else {}
        if arm.best_of:
            extra = {"loss.strategy": "fixed", "loss.weights": {t: 1.0 for t in TASKS}}
        try:
            config = training_config(study, arm, extra, seed=study.seeds[0], run_dir=study.out / arm.name)
        except (ConfigError, DataConfigError) as error:
            raise StudyConfigError(f"arms.{arm.name}: {error}") from None
        if arm.total_weight is not None and config.loss.strategy != "fixed":
            raise StudyConfigError(f"arms.{arm.name}.total_weight: needs fixed weights (loss.strategy=fixed)")


def training_config(
    study: StudyConfig,
    arm: Arm,
    extra: dict[str, Any],
    *,
    seed: int,
    run_dir: Path,
    pilot: bool = False,
    resume: Path | None = None,
    stop_at: int | None = None,
) -> TrainConfig:
    """The arm's `TrainConfig`: base file, study overrides, scene folders, arm, pilot, then ``extra``."""
    values: dict[str, Any] = dict(study.overrides)
    if study.scenes is not None:
        values |= {"data.source": "disk", "data.disk_root": str(study.scenes.root), "data.mix": {}}
    values |= arm.overrides
    if pilot and study.pilot is not None:
        values |= study.pilot.overrides
    values |= extra
    values |= {"seed": seed, "run_dir": str(run_dir), "resume": str(resume) if resume else None}
    values["stop_at"] = stop_at
    return load_config(study.base, as_overrides(values))


# ---------------------------------------------------------------- planning and running


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


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


class WaitingError(Exception):
    """A run's settings depend on runs that have not finished yet; the message says which."""


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


@dataclass
class Budget:
    """When this invocation stops starting new chunks: after ``max_minutes`` or ``max_runs`` finished runs."""

    max_minutes: float | None = None
    max_runs: int | None = None
    started: float = field(default_factory=time.monotonic)
    finished: int = 0
    chunks: int = 0

    def exhausted(self) -> bool:
        over_time = self.max_minutes is not None and time.monotonic() - self.started >= self.max_minutes * 60
        over_runs = self.max_runs is not None and self.finished >= self.max_runs
        return over_time or over_runs

    def allows_another(self, in_flight: int) -> bool:
        """Whether a run may start while ``in_flight`` others are still going."""
        room = self.max_runs is None or self.finished + in_flight < self.max_runs
        return room and not self.exhausted()


def _comparable(config: TrainConfig) -> dict[str, Any]:
    data = to_dict(config)
    for key in ("run_dir", "resume", "stop_at"):
        data.pop(key)
    return data


def advance(
    study: StudyConfig, run: PlannedRun, extra: dict[str, Any], budget: Budget, say: Callable[[str], None]
) -> bool:
    """Train the run chunk by chunk until it is finished or the budget ends; then score it.

    Returns True when the run is finished (``result.json`` written). A run started
    before under another config is refused rather than resumed into a mixture.
    """
    config = training_config(study, run.arm, extra, seed=run.seed, run_dir=run.run_dir, pilot=run.pilot)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    record_path = run.run_dir / RUN_RECORD
    record: dict[str, Any] = {"config": _comparable(config), "train_seconds": 0.0}
    if record_path.is_file():
        saved = json.loads(record_path.read_text())
        if saved["config"] != record["config"]:
            changed = sorted(k for k in record["config"] if record["config"][k] != saved["config"].get(k))
            raise StudyConfigError(
                f"{run.run_dir} was started with a different training config (differs in: "
                f"{', '.join(changed)}); restore the study config or delete that folder"
            )
        record = saved
    checkpoint = run.run_dir / "last.pt"
    state: dict[str, Any] = (
        load_checkpoint(checkpoint) if checkpoint.is_file() else {"step": 0, "metrics": {}}
    )
    step = int(state["step"])
    if step >= config.steps and state["metrics"] and not (run.run_dir / "metrics.json").is_file():
        # Stopped between the final checkpoint and metrics.json: the checkpoint holds them.
        final = {"step": step, "sigma": weighting_from_checkpoint(state).sigma(), **state["metrics"]}
        (run.run_dir / "metrics.json").write_text(json.dumps(final, indent=2))
    trained = (run.run_dir / "metrics.json").is_file()
    if step and not trained:
        say(f"{run.label}: resuming at step {step}/{config.steps}")
    while not trained:
        if budget.exhausted():
            return False
        stop = min(config.steps, step + study.chunk_steps)
        chunk = training_config(
            study,
            run.arm,
            extra,
            seed=run.seed,
            run_dir=run.run_dir,
            pilot=run.pilot,
            resume=checkpoint if step else None,
            stop_at=stop if stop < config.steps else None,
        )
        started = time.monotonic()
        train(chunk, setup_placement(chunk))
        seconds = time.monotonic() - started
        budget.chunks += 1
        record["train_seconds"] += seconds
        record_path.write_text(json.dumps(record, indent=1))
        say(
            f"{run.label}: step {stop}/{config.steps}, {_duration(record['train_seconds'])} trained "
            f"({seconds / (stop - step):.2f} s/step)"
        )
        step, trained = stop, stop >= config.steps
    result = score(study, run, config, record["train_seconds"])
    (run.run_dir / RESULT).write_text(json.dumps(result, indent=1))
    say(_result_line(run, result))
    return True


def score(study: StudyConfig, run: PlannedRun, config: TrainConfig, train_seconds: float) -> dict[str, Any]:
    """The run's result: test metrics on the study's held-out scenes, validation metrics, weights."""
    model, state = model_from_checkpoint(run.run_dir / "last.pt")
    device = setup_placement(config).device
    ev = study.evaluation
    scenes = ProceduralScenes(
        split=ev.split, seed=ev.seed, count=ev.count, height=config.data.height, width=config.data.width
    )
    test = evaluate(model.to(device), scenes, batch_size=ev.batch_size, device=device)
    validation = json.loads((run.run_dir / "metrics.json").read_text())
    weighting = weighting_from_checkpoint(state)
    sigma = weighting.sigma()
    return {
        "arm": run.arm.name,
        "seed": run.seed,
        "pilot": run.pilot,
        "grid_point": run.grid_point,
        "strategy": config.loss.strategy,
        "tasks": list(weighting.tasks),
        "fixed_weights": dict(config.loss.weights) if config.loss.strategy == "fixed" else None,
        "final_weights": {t: likelihood_scale(t) / sigma[t] ** 2 for t in weighting.tasks}
        if config.loss.strategy.startswith("uncertainty")
        else None,
        "mean_total_weight": mean_total_weight(run.run_dir / "log.csv"),
        "clip_rate": clip_rate(run.run_dir / "log.csv", config.steps),
        "steps": config.steps,
        "train_seconds": round(train_seconds, 1),
        "sigma": sigma,
        "val": {k: v for k, v in validation.items() if isinstance(v, int | float)},
        "test": {k: v for k, v in test.items() if isinstance(v, int | float)},
        "evaluation": {"split": ev.split, "seed": ev.seed, "count": ev.count},
    }


def mean_total_weight(log_csv: Path) -> float:
    """Σ_i weight_i averaged over the logged steps: the loss scale the run trained at."""
    with log_csv.open(newline="") as f:
        totals = [sum(float(row[f"weight_{t}"]) for t in TASKS) for row in csv.DictReader(f)]
    return statistics.fmean(totals)


def clip_rate(log_csv: Path, steps: int) -> float | None:
    """Share of the run's steps whose gradient norm was clipped (``None``: a log from before
    the trainer counted them)."""
    with log_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not rows[0].get("clipped_steps"):
        return None
    return sum(int(float(row["clipped_steps"])) for row in rows) / steps


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def _result_line(run: PlannedRun, result: dict[str, Any]) -> str:
    test = result["test"]
    parts = [f"{TASK_METRICS[t][1]} {test[TASK_METRICS[t][0]]:.4g}" for t in result["tasks"]]
    return f"{run.label}: finished; test {', '.join(parts)}"


def study_seeds(study: StudyConfig, say: Callable[[str], None]) -> list[int]:
    """The study's seeds, or the pilot's larger set when the pilot found a wide spread."""
    decision = study.out / "pilot" / "pilot.json"
    if study.pilot is None or not decision.is_file():
        return study.seeds
    seeds: list[int] = json.loads(decision.read_text())["seeds"] or study.seeds
    if seeds != study.seeds:
        say(f"the pilot's mIoU spread is over its limit: using seeds {seeds} instead of {study.seeds}")
    return seeds


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


def run_study(
    study: StudyConfig,
    budget: Budget,
    *,
    pilot: bool = False,
    say: Callable[[str], None] = print,
    jobs: int = 1,
) -> bool:
    """Train and score every unfinished run the budget allows, then write the report.

    With ``jobs`` > 1, that many runs train at once in worker processes (`_run_in_parallel`).
    Returns True when every run of the study (or the pilot) is finished or failed.
    """
    if pilot and study.pilot is None:
        raise StudyConfigError("--pilot: the study config has no pilot section")
    render_scenes(study, say)
    runs = plan(study, [] if pilot else study_seeds(study, say), pilot)
    pending = [r for r in runs if read_result(r.run_dir) is None and not (r.run_dir / FAILED).is_file()]
    say(f"{len(runs) - len(pending)} of {len(runs)} runs finished; {len(pending)} to go")
    if jobs > 1:
        _run_in_parallel(study, pending, budget, jobs, say)
    else:
        _run_in_turn(study, pending, budget, say)
    for run in pending:
        try:
            run_settings(study, run)
            reason = "the budget ran out" if budget.exhausted() else "not run"
        except WaitingError as waiting:
            reason = str(waiting)
        say(f"{run.label}: left for later ({reason})")
    write_report(study, pilot=pilot)
    return not pending


def _run_in_turn(
    study: StudyConfig, pending: list[PlannedRun], budget: Budget, say: Callable[[str], None]
) -> None:
    """Advance runs one after another in this process; finished runs leave ``pending``."""
    while pending and not budget.exhausted():
        picked = _next_runnable(study, pending, running=())
        if picked is None:
            break  # every pending run waits for one that failed
        run, extra = picked
        try:
            finished = advance(study, run, extra, budget, say)
        except NonFiniteLossError as error:
            finished = _record_failure(run, error, say)
        if finished:
            pending.remove(run)
            budget.finished += 1


def _next_runnable(
    study: StudyConfig, pending: Sequence[PlannedRun], running: Sequence[PlannedRun]
) -> tuple[PlannedRun, dict[str, Any]] | None:
    """The first pending run that is not running and waits for nothing, with its settings."""
    for run in pending:
        if run in running:
            continue
        try:
            return run, run_settings(study, run)
        except WaitingError:
            continue
    return None


def _record_failure(run: PlannedRun, error: NonFiniteLossError, say: Callable[[str], None]) -> bool:
    (run.run_dir / FAILED).write_text(json.dumps({"error": str(error)}))
    say(f"{run.label}: failed: {error}")
    return True


def _run_in_parallel(
    study: StudyConfig, pending: list[PlannedRun], budget: Budget, jobs: int, say: Callable[[str], None]
) -> None:
    """Advance up to ``jobs`` runs at once, each in a worker process with ``cores // jobs``
    torch threads; finished runs leave ``pending``. A run that waits for others (the
    grid's best weights) starts once they are finished. Workers print their own progress
    lines; the budget's deadline holds in each of them, and no run starts that could
    take the finished runs past ``max_runs``. Only the budget's ``max_minutes`` and
    ``max_runs`` apply here (a `Budget` subclass's own rule does not reach the workers).
    If a run raises (a changed config, say), the other workers stop at their next
    chunk boundary and the error reaches the caller."""
    if not pending:
        return
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // jobs)
    say(f"training {jobs} runs at once, {threads} torch thread(s) each")
    if jobs > cores:
        say(f"warning: {jobs} jobs on {cores} cores: the runs will share cores")
    # Spawned, not forked: forking a process that has run torch can hang its thread pools.
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    running: dict[Future[bool], PlannedRun] = {}
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker, initargs=(threads, stop)
    ) as pool:
        try:
            while True:
                while len(running) < jobs and budget.allows_another(len(running)):
                    picked = _next_runnable(study, pending, list(running.values()))
                    if picked is None:
                        break
                    run, extra = picked
                    deadline = _WorkerBudget(budget.max_minutes, started=budget.started)
                    running[pool.submit(_advance_in_worker, study, run, extra, deadline)] = run
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                errors: list[BaseException] = []
                for future in done:  # every finished run is counted before an error is raised
                    run = running.pop(future)
                    try:
                        finished = future.result()
                    except NonFiniteLossError as error:
                        finished = _record_failure(run, error, say)
                    except Exception as error:
                        errors.append(error)
                        continue
                    if finished:
                        pending.remove(run)
                        budget.finished += 1
                if errors:
                    raise errors[0]
        except BaseException:
            stop.set()  # the pool's exit waits for the running workers: let them finish a chunk, not a run
            raise


# Set in each worker process by `_start_worker`: the parent's request to stop early, and
# the parent's process id (a worker whose parent has died stops at its next chunk).
_stop_request: Any = None
_parent_pid: int | None = None


def _start_worker(threads: int, stop: Any) -> None:
    global _stop_request, _parent_pid
    torch.set_num_threads(threads)
    _stop_request = stop
    _parent_pid = os.getppid()


def _orphaned() -> bool:
    """Whether this worker's parent has died (killed outright, with no chance to stop it)."""
    return _parent_pid is not None and os.getppid() != _parent_pid


@dataclass
class _WorkerBudget(Budget):
    """The parent's deadline, and spent as soon as the parent asks the workers to stop or dies."""

    def exhausted(self) -> bool:
        stop_requested = _stop_request is not None and _stop_request.is_set()
        return super().exhausted() or stop_requested or _orphaned()


def _advance_in_worker(
    study: StudyConfig, run: PlannedRun, extra: dict[str, Any], budget: _WorkerBudget
) -> bool:
    """`advance` in a worker process, with progress on stdout, until the caller's deadline
    (``budget``'s ``max_minutes`` from its ``started``: `time.monotonic` is one clock for
    every process) or the caller's request to stop."""
    return advance(study, run, extra, budget, _say_on_stdout)


def _say_on_stdout(line: str) -> None:
    print(f"scene-study: {line}", flush=True)


def restore_results(study: StudyConfig, source: Path, say: Callable[[str], None]) -> int:
    """Seed the study's run folders from a ``results.json`` that `write_report` wrote elsewhere.

    Each result of ``source`` that matches a planned run (arm, seed, grid point, pilot or
    not) and agrees with this study on what makes runs comparable (the evaluation scenes,
    the number of steps, the loss strategy, the fixed weights) becomes that run's
    ``result.json``, marked with ``restored_from``; the run then counts as finished. A
    result that disagrees stops the restore with `StudyConfigError` (the ones before it,
    which agreed, stay). A pilot report also restores its seed decision. Runs already
    finished here are kept. Training logs do not travel in ``results.json``, so the σ
    plots draw only the runs trained here. Returns the number of runs restored.
    """
    try:
        report = json.loads(source.read_text())
        results = report["results"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StudyConfigError(f"--restore: {source} is not a scene-study results.json ({error})") from error
    pilot = bool(report.get("pilot"))
    if pilot:
        decision = report["pilot"]
        target = study.out / "pilot" / "pilot.json"
        if decision.get("complete") and not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(decision, indent=1))
            say(f"restored the pilot's decision: seeds {decision['seeds']}")
    runs = plan(study, [] if pilot else study_seeds(study, say), pilot)
    ev = study.evaluation
    wanted_evaluation = {"split": ev.split, "seed": ev.seed, "count": ev.count}
    restored = 0
    for result in results:
        key = (result["arm"], result["seed"], result["grid_point"], result["pilot"])
        run = next((r for r in runs if (r.arm.name, r.seed, r.grid_point, r.pilot) == key), None)
        name = f"{'pilot ' if result['pilot'] else ''}{result['arm']} seed {result['seed']}"
        if run is None:
            say(f"{name}: not a run of this study; skipped")
            continue
        if read_result(run.run_dir) is not None:
            continue
        try:
            extra = run_settings(study, run)  # grid, selected or scaled weights
        except WaitingError as waiting:
            raise StudyConfigError(f"--restore: {run.label} cannot be checked: {waiting}") from waiting
        config = training_config(study, run.arm, extra, seed=run.seed, run_dir=run.run_dir, pilot=run.pilot)
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
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / RESULT).write_text(json.dumps(result | {"restored_from": str(source)}, indent=1))
        restored += 1
    say(f"restored {restored} finished run(s) from {source}")
    return restored


def _same_weights(ours: dict[str, float] | None, theirs: dict[str, float] | None) -> bool:
    """Equal fixed weights (both None for learned ones), up to the rounding of a JSON round trip."""
    if ours is None or theirs is None:
        return ours is theirs
    return ours.keys() == theirs.keys() and all(math.isclose(ours[t], theirs[t], rel_tol=1e-6) for t in ours)


# ---------------------------------------------------------------- aggregation


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1); the deviation is None for one value."""
    if not values:
        raise ValueError("no values")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def t95(degrees_of_freedom: int) -> float:
    """One-sided 95% quantile of Student's t."""
    if degrees_of_freedom < 1:
        raise ValueError("need at least one degree of freedom")
    return _T95[min(degrees_of_freedom, len(_T95)) - 1]


def compare(
    arm: dict[int, dict[str, float]], reference: dict[int, dict[str, float]], comparison: Comparison
) -> list[dict[str, Any]]:
    """Paired non-inferiority of ``arm`` against ``reference`` per task metric both have.

    ``arm`` and ``reference``: seed -> test metrics. ``holds`` is None with fewer than
    two paired seeds (no interval), else whether the one-sided 95% bound clears the margin.
    """
    seeds = sorted(set(arm) & set(reference))
    rows = []
    for key, label, higher in TASK_METRICS.values():
        if not seeds or key not in arm[seeds[0]] or key not in reference[seeds[0]]:
            continue
        a = [arm[s][key] for s in seeds]
        r = [reference[s][key] for s in seeds]
        if higher:
            margin = comparison.miou_points
            diffs = [x - y for x, y in zip(a, r, strict=True)]
        else:
            margin = comparison.relative_error
            # a < (1 + m)·r  <=>  a − (1 + m)·r < 0, a paired difference with an upper bound.
            diffs = [x - (1 + margin) * y for x, y in zip(a, r, strict=True)]
        mean, std = mean_std(diffs)
        bound = None
        if std is not None:
            half = t95(len(seeds) - 1) * std / math.sqrt(len(seeds))
            bound = mean - half if higher else mean + half
        holds = None if bound is None else (bound > -margin if higher else bound < 0)
        rows.append(
            {
                "metric": key,
                "label": label,
                "seeds": seeds,
                "difference": statistics.fmean(a) - statistics.fmean(r),
                "relative": statistics.fmean(a) / statistics.fmean(r) - 1,
                "margin": margin,
                "bound": bound,
                "holds": holds,
            }
        )
    return rows


def summarise(results: list[dict[str, Any]], arms: list[str]) -> list[dict[str, Any]]:
    """One row per arm: seeds, and mean ± std of each trained task's test metric."""
    rows = []
    for name in arms:
        mine = [r for r in results if r["arm"] == name and r["grid_point"] is None]
        row: dict[str, Any] = {"arm": name, "seeds": sorted(r["seed"] for r in mine), "metrics": {}}
        if mine:
            tasks = mine[0]["tasks"]
            for task in tasks:
                key = TASK_METRICS[task][0]
                mean, std = mean_std([r["test"][key] for r in mine])
                row["metrics"][key] = {"mean": mean, "std": std}
            row["weights"] = _weights_text(mine)
        rows.append(row)
    return rows


def multitask_scores(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Δm% against the single-task arms, and the mean rank among the three-task arms.

    ``rows`` are `summarise`'s. Δm% (as Nash-MTL, FAMO and LibMTL report it) is the mean
    over an arm's tasks of its relative change from the single-task arm of that task,
    signed so that a worse result is positive: (1/T) Σ_t ±(M_t − M_single,t) / M_single,t
    · 100, with + for errors and − for mIoU; lower is better, ``None`` without a
    single-task arm for every task. The mean rank ranks the arms that train all three
    tasks on each task's metric (1 = best) and averages over the tasks.
    """
    single = {
        next(iter(row["metrics"])): row["metrics"][next(iter(row["metrics"]))]["mean"]
        for row in rows
        if len(row["metrics"]) == 1
    }
    higher = {key: better_higher for key, _, better_higher in TASK_METRICS.values()}
    scores: dict[str, dict[str, float | None]] = {}
    for row in rows:
        metrics = row["metrics"]
        if len(metrics) < 2:
            continue
        changes = [
            (-1 if higher[key] else 1) * (value["mean"] - single[key]) / single[key] * 100
            for key, value in metrics.items()
            if key in single
        ]
        delta = statistics.fmean(changes) if len(changes) == len(metrics) else None
        scores[row["arm"]] = {"delta_m_percent": delta, "mean_rank": None}
    full = [row for row in rows if len(row["metrics"]) == len(TASK_METRICS)]
    for key, _, better_higher in TASK_METRICS.values():
        ordered = sorted(full, key=lambda row: row["metrics"][key]["mean"], reverse=better_higher)
        for rank, row in enumerate(ordered, start=1):
            entry = scores[row["arm"]]
            entry["mean_rank"] = (entry["mean_rank"] or 0.0) + rank / len(TASK_METRICS)
    return scores


def _weights_text(results: list[dict[str, Any]]) -> str:
    first = results[0]
    if first["fixed_weights"] is not None:
        return " / ".join(f"{first['fixed_weights'].get(t, 0):.3g}" for t in TASKS)
    if first["final_weights"] is not None:
        means = {t: statistics.fmean(r["final_weights"][t] for r in results) for t in first["tasks"]}
        return "learned, ends " + " / ".join(f"{means[t]:.3g}" if t in means else "–" for t in TASKS)
    return str(first["strategy"])


def _cell(metric: dict[str, Any] | None, digits: int) -> str:
    if metric is None:
        return "–"
    std = "" if metric["std"] is None else f" ± {metric['std']:.{digits}f}"
    return f"{metric['mean']:.{digits}f}{std}"


_DIGITS = {"semantic_miou": 1, "instance_mean_error_px": 2, "inverse_depth_mean_error": 4}


def write_report(study: StudyConfig, pilot: bool = False) -> dict[str, Any]:
    """Gather every finished run under the study's folder into JSON, Markdown and plots."""
    root = study.out / "pilot" if pilot else study.out
    arms = study.pilot.arms if pilot and study.pilot else [a.name for a in study.arms if a.grid is None]
    runs = plan(study, [] if pilot else study_seeds(study, lambda _: None), pilot)
    results = [r for r in (read_result(run.run_dir) for run in runs) if r is not None]
    failed = [str(run.run_dir) for run in runs if (run.run_dir / FAILED).is_file()]
    rows = summarise(results, arms)
    # Only the metrics of the tasks an arm trains: a single-task arm is compared on its task.
    by_seed = {
        name: {
            r["seed"]: {TASK_METRICS[t][0]: r["test"][TASK_METRICS[t][0]] for t in r["tasks"]}
            for r in results
            if r["arm"] == name and r["grid_point"] is None
        }
        for name in arms
    }
    comparisons = []
    if not pilot:
        for c in study.comparisons:
            comparisons.append(
                {
                    "arm": c.arm,
                    "reference": c.reference,
                    "rows": compare(by_seed[c.arm], by_seed[c.reference], c),
                }
            )
    grids = {a.name: select_grid_point(study, a) for a in study.arms if a.grid is not None and not pilot}
    report: dict[str, Any] = {
        "study": str(study.path),
        "evaluation": vars(study.evaluation),
        "runs_planned": len(runs),
        "runs_finished": len(results),
        "runs_failed": failed,
        "table": rows,
        "multitask": multitask_scores(rows),
        "comparisons": comparisons,
        "grid_selection": grids,
        "results": results,
    }
    if pilot and study.pilot is not None:
        report["pilot"] = pilot_decision(study.pilot, rows, len(results) == len(runs))
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.json").write_text(json.dumps(report, indent=1))
    (root / "table.md").write_text(markdown(study, report, pilot))
    if pilot and report["pilot"]["complete"]:
        (root / "pilot.json").write_text(json.dumps(report["pilot"], indent=1))
    plot_sigmas(results, root)
    if not pilot:
        plot_grid(study, results, root)
    return report


def pilot_decision(pilot: Pilot, rows: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
    """The pilot rule: over ``miou_std_limit`` points of mIoU spread in any arm -> ``seeds_if_over``."""
    spreads = {
        row["arm"]: row["metrics"].get("semantic_miou", {}).get("std") for row in rows if row["metrics"]
    }
    known = [s for s in spreads.values() if s is not None]
    widest = max(known) if known else None
    over = widest is not None and widest > pilot.miou_std_limit
    return {
        "complete": complete,
        "miou_std": spreads,
        "miou_std_limit": pilot.miou_std_limit,
        "over_limit": over,
        "seeds": pilot.seeds_if_over if over else None,
    }


def _restored_text(results: list[dict[str, Any]]) -> str:
    sources = sorted({r["restored_from"] for r in results if "restored_from" in r})
    if not sources:
        return ""
    count = sum(1 for r in results if "restored_from" in r)
    return f" {count} run(s) were trained elsewhere and restored from {', '.join(sources)}."


def markdown(study: StudyConfig, report: dict[str, Any], pilot: bool) -> str:
    ev = study.evaluation
    lines = [
        f"# {'Pilot of ' if pilot else ''}{study.path.name}",
        "",
        f"{report['runs_finished']} of {report['runs_planned']} runs finished"
        + (f", {len(report['runs_failed'])} failed" if report["runs_failed"] else "")
        + f". Test: procedural `{ev.split}` split, seed {ev.seed}, {ev.count} scenes. "
        "Mean ± standard deviation over seeds." + _restored_text(report["results"]),
        "",
        "| arm | weights sem / inst / depth | seeds | "
        + " | ".join(m[1] for m in TASK_METRICS.values())
        + " |",
        "|---|---|---|" + "---|" * len(TASK_METRICS),
    ]
    for row in report["table"]:
        cells = [_cell(row["metrics"].get(key), _DIGITS[key]) for key, _, _ in TASK_METRICS.values()]
        seeds = ", ".join(map(str, row["seeds"])) or "none yet"
        lines.append(f"| {row['arm']} | {row.get('weights', '')} | {seeds} | " + " | ".join(cells) + " |")
    if report.get("multitask"):
        lines += [
            "",
            "Δm%: mean relative change from the single-task arms over the arm's tasks, worse positive "
            "(lower is better); mean rank among the three-task arms (1 = best).",
            "",
            "| arm | Δm% | mean rank |",
            "|---|---|---|",
        ]
        for arm, score in report["multitask"].items():
            delta, rank = score["delta_m_percent"], score["mean_rank"]
            delta_text = "–" if delta is None else f"{delta:+.1f}"
            lines.append(f"| {arm} | {delta_text} | {'–' if rank is None else f'{rank:.2f}'} |")
    if pilot and "pilot" in report:
        decision = report["pilot"]
        lines += ["", f"Pilot rule: mIoU standard deviation per arm {decision['miou_std']}, limit "
                  f"{decision['miou_std_limit']} points: "
                  + ("not complete yet." if not decision["complete"] else
                     f"over it, the study uses seeds {decision['seeds']}." if decision["over_limit"] else
                     "within it, the study keeps its seeds.")]  # fmt: skip
    for comparison in report["comparisons"]:
        lines += [
            "",
            f"## {comparison['arm']} against {comparison['reference']}",
            "",
            "Paired over seeds; one-sided 95% bound (Student t) of the mean paired difference.",
            "",
            "| metric | seeds | difference of means | relative | margin | 95% bound | holds |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in comparison["rows"]:
            higher = row["metric"] == "semantic_miou"
            margin = f"{row['margin']:g} points" if higher else f"{row['margin']:.0%} of the reference"
            bound = (
                "–"
                if row["bound"] is None
                else f"{row['bound']:+.4g}" + (" (> −margin)" if higher else " (< 0)")
            )
            holds = {None: "too few seeds", True: "yes", False: "no"}[row["holds"]]
            lines.append(
                f"| {row['label']} | {len(row['seeds'])} | {row['difference']:+.4g} | {row['relative']:+.1%} "
                f"| {margin} | {bound} | {holds} |"
            )
    for name, selection in report["grid_selection"].items():
        arm = study.arm(name)
        assert arm.grid is not None
        lines += [
            "",
            f"## Fixed-weight grid {name} (seed {arm.grid.seed}, chosen on the validation split by "
            f"{arm.grid.select})",
            "",
            "| weights sem / inst / depth | val mIoU % | val instance px | val inv. depth 1/m | score "
            "| test mIoU % |",
            "|---|---|---|---|---|---|",
        ]
        for result in report["results"]:
            if result["arm"] != name:
                continue
            val, test, point = result["val"], result["test"], result["grid_point"]
            label = point_label(point)
            score = "" if selection is None else f"{selection['scores'].get(label, math.nan):.2f}"
            chosen = " **chosen**" if selection and selection["weights"] == point else ""
            lines.append(
                f"| {' / '.join(f'{point.get(t, 0):g}' for t in TASKS)}{chosen} | {val['semantic_miou']:.1f} "
                f"| {val['instance_mean_error_px']:.2f} | {val['inverse_depth_mean_error']:.4f} | {score} "
                f"| {test['semantic_miou']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def plot_sigmas(results: list[dict[str, Any]], out: Path) -> list[Path]:
    """``sigma_<arm>.png``: each task's σ over training, one line per seed, per learned-weight arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    arms = sorted(
        {r["arm"] for r in results if r["strategy"].startswith("uncertainty") and r["grid_point"] is None}
    )
    colours = dict(zip(TASKS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for name in arms:
        logged = [r for r in results if r["arm"] == name and (_run_dir(out, r) / "log.csv").is_file()]
        if not logged:
            continue  # restored runs only: their logs stayed where they were trained
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
        for result in logged:
            log = _run_dir(out, result) / "log.csv"
            with log.open(newline="") as f:
                rows = list(csv.DictReader(f))
            steps = [int(row["step"]) for row in rows]
            for task in result["tasks"]:
                label = task if result["seed"] == min(r["seed"] for r in logged) else None
                ax.plot(steps, [float(row[f"sigma_{task}"]) for row in rows], color=colours[task], alpha=0.7,
                        linewidth=1, label=label)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("σ = exp(s / 2)")
        seeds = ("seeds " if len(logged) > 1 else "seed ") + ", ".join(str(r["seed"]) for r in logged)
        ax.set_title(f"{name}: learned σ per task ({seeds}, one line each)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / f"sigma_{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def _run_dir(out: Path, result: dict[str, Any]) -> Path:
    if result["grid_point"] is not None:
        return out / str(result["arm"]) / point_label(result["grid_point"]) / f"seed{result['seed']}"
    return out / str(result["arm"]) / f"seed{result['seed']}"


def plot_grid(study: StudyConfig, results: list[dict[str, Any]], out: Path) -> list[Path]:
    """``grid_<arm>.png``: each test metric against its task's fixed weight (cf. the paper's Figure 2).

    Learned-weight arms that train all the grid's tasks are drawn as horizontal lines
    (mean over their seeds) for comparison.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    written = []
    for arm in (a for a in study.arms if a.grid is not None):
        points = [r for r in results if r["arm"] == arm.name]
        if not points:
            continue
        tasks = [t for t in TASKS if any(r["grid_point"].get(t, 0) > 0 for r in points)]
        fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.3), dpi=120, squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=True):
            key, label, _ = TASK_METRICS[task]
            xs = [r["grid_point"].get(task, 0) for r in points]
            ax.scatter(
                xs,
                [r["test"][key] for r in points],
                color="black",
                zorder=3,
                label=f"grid, seed {arm.grid.seed if arm.grid else ''}",
            )
            learned = sorted({r["arm"] for r in results if r["strategy"].startswith("uncertainty")
                              and r["grid_point"] is None and set(tasks) <= set(r["tasks"])})  # fmt: skip
            for name in learned:
                mean = statistics.fmean(
                    r["test"][key] for r in results if r["arm"] == name and r["grid_point"] is None
                )
                ax.axhline(mean, linestyle="--", linewidth=1, label=f"{name} (mean over seeds)")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short log axis
            ax.set_xlabel(f"fixed weight of {task}")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{arm.name}: test metrics against the fixed task weight")
        fig.tight_layout()
        path = out / f"grid_{arm.name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scene-study",
        description="Re-run the paper's Table 1 (single task, unweighted, grid-searched fixed weights, "
        "learned uncertainty weighting) over seeds: resumable, in chunks, then a table with mean ± std.",
        epilog="Exit status: 0 when every run is finished, 3 when the budget ended with runs left "
        "(run the same command again to go on), 2 for a bad config.",
    )
    parser.add_argument("--config", type=Path, required=True, help="study config (see configs/study.yaml)")
    parser.add_argument("--pilot", action="store_true", help="run the pilot arms instead of the study")
    parser.add_argument(
        "--report", action="store_true", help="only write the table and plots from finished runs"
    )
    parser.add_argument(
        "--restore",
        type=Path,
        metavar="RESULTS_JSON",
        help="first mark the runs of a results.json written elsewhere (another machine, an earlier "
        "checkout) as finished here, then go on as usual",
    )
    parser.add_argument("--max-minutes", type=float, help="start no training chunk after this many minutes")
    parser.add_argument("--max-runs", type=int, help="stop after finishing this many runs")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs trained at once, each in its own process (default 1)"
    )
    args = parser.parse_args(argv)
    previous: Any = None
    try:
        if args.max_minutes is not None and args.max_minutes <= 0:
            raise StudyConfigError(f"--max-minutes: must be positive, got {args.max_minutes}")
        if args.max_runs is not None and args.max_runs <= 0:
            raise StudyConfigError(f"--max-runs: must be positive, got {args.max_runs}")
        if args.jobs <= 0:
            raise StudyConfigError(f"--jobs: must be positive, got {args.jobs}")
        study = load_study(args.config)
        # `kill` (SIGTERM) stops the study the way a deadline does: running workers finish
        # their chunk, so its checkpoint is kept, and no worker goes on training alone.
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        if args.restore is not None:
            restore_results(study, args.restore, _say_on_stdout)
        if args.report:
            write_report(study, pilot=args.pilot)
            done = True
        else:
            budget = Budget(args.max_minutes, args.max_runs)
            done = run_study(study, budget, pilot=args.pilot, say=_say_on_stdout, jobs=args.jobs)
    except (StudyConfigError, ConfigError, CheckpointError, DataConfigError) as error:
        print(f"scene-study: error: {error}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    root = study.out / "pilot" if args.pilot else study.out
    print(f"scene-study: table {root / 'table.md'}, raw results {root / 'results.json'}")
    return 0 if done else 3


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    _say_on_stdout("stopping (SIGTERM): running runs finish their chunk; the same command goes on later")
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
