"""A finished run's result: test metrics on the study's held-out scenes, validation metrics, weights."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from scene_contract.model import TASKS
from training.checkpoint import model_from_checkpoint, weighting_from_checkpoint
from training.config import TrainConfig
from training.data.procedural import ProceduralScenes
from training.evaluate import evaluate
from training.study.config import StudyConfig
from training.study.plan import PlannedRun
from training.train import setup_placement
from training.weighting import likelihood_scale


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
        # A learned run's weights over training travel with its result, so that arms
        # derived from it (`training.study.derive`) can go on on another machine.
        "schedule": learned_schedule(run.run_dir / "log.csv")
        if config.loss.strategy.startswith("uncertainty")
        else None,
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


# The log.csv columns a learned run's result carries (`learned_schedule`).
SCHEDULE_COLUMNS = ("step", "lr", *(f"weight_{t}" for t in TASKS), *(f"sigma_{t}" for t in TASKS))


def learned_schedule(log_csv: Path) -> dict[str, list[float]]:
    """The columns of ``log_csv`` that rate matching and the σ plots read, column by column."""
    with log_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    schedule = {column: [float(row[column]) for row in rows] for column in SCHEDULE_COLUMNS}
    schedule["step"] = [int(step) for step in schedule["step"]]
    return schedule


def write_schedule(schedule: dict[str, list[float]], log_csv: Path) -> None:
    """`learned_schedule`'s columns back into a ``log.csv`` that `read_schedule` reads."""
    with log_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(schedule)
        writer.writerows(zip(*schedule.values(), strict=True))
