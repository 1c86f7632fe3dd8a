"""Fixed task weights matched to a learned-weight run's weight × learning-rate integral.

Under SGD a task's weight multiplies its gradient, so what a run gives task i over
training is Σ_t lr_t · w_i(t), not the mean weight: a weight that rises late, when the
poly rate is small, buys less than its mean says. A fixed-weight arm meant to train at
the learned arm's rate has to match that integral (issue 28). Its schedule is the same
(same config and steps), so Σ_t lr_t cancels, and everything here is a rate-weighted
mean of the learned weights:

- ``rate_weighted_weights``: w̄_i = Σ_t lr_t w_i(t) / Σ_t lr_t, each task's fixed weight
  with the learned arm's integral for that task (single tasks at the learned weight);
- ``rate_matched_scale``: k = Σ_i w̄_i / Σ_i w_i, the factor that gives fixed weights w
  the learned arm's integral summed over tasks (unweighted ×k, best fixed ×k);
- ``end_point_weights``: the weights of the last logged step, held fixed to ask whether
  the learned weights' end point alone does what the learned arm does.

The match is in loss weight × rate, which is step size only while the gradient clip does
not bind. ``step_length`` measures what a run got: Σ_t lr_t · min(‖g_t‖, clip), the
length of its SGD path before momentum, from the gradient norms its log samples.

    python -m training.rate_matching runs/study/uncertainty/seed*/log.csv \\
        --weights semantic=0.498 instance=0.00498 depth=0.498
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from scene_contract.model import TASKS


class ScheduleError(ValueError):
    """A log cannot be read as a schedule; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Schedule:
    """A run's logged steps (ascending), learning rates and per-task weights, one entry per row.

    Row r stands for the ``steps[r] − steps[r − 1]`` updates since the row before (the
    first for ``steps[0]``), with its rate and weights for all of them: scene-train logs
    every ``log_every`` steps and always the last, so rows need not be evenly spaced.
    """

    steps: tuple[int, ...]
    lr: tuple[float, ...]
    weights: Mapping[str, tuple[float, ...]]

    def spans(self) -> list[int]:
        """The updates each row stands for."""
        return _spans(self.steps)


def _spans(steps: Sequence[int]) -> list[int]:
    """The updates each logged row stands for: the steps since the row before."""
    return [step - previous for previous, step in zip((0, *steps), steps, strict=False)]


def read_schedule(log_csv: Path) -> Schedule:
    """The schedule of a scene-train ``log.csv`` (columns ``step``, ``lr``, ``weight_<task>``)."""
    with log_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ["step", "lr", *(f"weight_{t}" for t in TASKS)]
    if not rows or any(c not in rows[0] for c in columns):
        raise ScheduleError(f"{log_csv}: expected a scene-train log with columns {', '.join(columns)}")
    steps = tuple(int(r["step"]) for r in rows)
    if any(b <= a for a, b in pairwise(steps)) or steps[0] <= 0:
        raise ScheduleError(f"{log_csv}: steps must be positive and rise from row to row")
    weights = {t: tuple(float(r[f"weight_{t}"]) for r in rows) for t in TASKS}
    return Schedule(steps, tuple(float(r["lr"]) for r in rows), weights)


def rate_weighted_weights(schedules: Sequence[Schedule]) -> dict[str, float]:
    """Each task's Σ lr_t · w_i(t) / Σ lr_t over every step of every run (seeds pooled)."""
    rate = sum(span * lr for s in schedules for span, lr in zip(s.spans(), s.lr, strict=True))
    return {
        task: sum(
            span * lr * w
            for s in schedules
            for span, lr, w in zip(s.spans(), s.lr, s.weights[task], strict=True)
        )
        / rate
        for task in TASKS
    }


def step_mean_weights(schedules: Sequence[Schedule]) -> dict[str, float]:
    """Each task's plain mean weight over steps, the measure the rate-weighted one replaces."""
    count = sum(sum(s.spans()) for s in schedules)
    return {
        task: sum(span * w for s in schedules for span, w in zip(s.spans(), s.weights[task], strict=True))
        / count
        for task in TASKS
    }


def rate_matched_scale(schedules: Sequence[Schedule], weights: Mapping[str, float]) -> float:
    """k with Σ_t lr_t · Σ_i k·w_i equal to the runs' mean Σ_t lr_t · Σ_i w_i(t)."""
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"fixed weights must sum to a positive number, got {dict(weights)}")
    return sum(rate_weighted_weights(schedules).values()) / total


def end_point_weights(schedules: Sequence[Schedule]) -> dict[str, float]:
    """Each task's weight at the last logged step, averaged over the runs."""
    return {task: sum(s.weights[task][-1] for s in schedules) / len(schedules) for task in TASKS}


def step_length(log_csv: Path, clip_norm: float) -> float:
    """Σ_t lr_t · min(‖g_t‖, clip_norm) over a scene-train log (columns ``step``, ``lr``, ``grad_norm``).

    Each row's gradient norm (the norm before clipping at that step) stands for the
    steps since the row before, as the rates do in `Schedule`: an estimate from a sample
    every ``log_every`` steps, which compares arms logged alike.
    """
    if clip_norm <= 0:
        raise ValueError(f"the clip norm must be positive, got {clip_norm}")
    with log_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or any(c not in rows[0] for c in ("step", "lr", "grad_norm")):
        raise ScheduleError(f"{log_csv}: expected a scene-train log with columns step, lr, grad_norm")
    spans = _spans([int(r["step"]) for r in rows])
    return sum(
        span * float(r["lr"]) * min(float(r["grad_norm"]), clip_norm)
        for span, r in zip(spans, rows, strict=True)
    )


def matching(schedules: Sequence[Schedule], weights: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The rate-matched quantities for ``schedules``, and the factor for ``weights`` if given."""
    report: dict[str, Any] = {
        "runs": len(schedules),
        "rate_weighted_weights": rate_weighted_weights(schedules),
        "step_mean_weights": step_mean_weights(schedules),
        "end_point_weights": end_point_weights(schedules),
    }
    if weights is not None:
        report["fixed_weights"] = dict(weights)
        report["rate_matched_scale"] = rate_matched_scale(schedules, weights)
    return report


def _weight(text: str) -> tuple[str, float]:
    task, sep, value = text.partition("=")
    if not sep or task not in TASKS:
        raise argparse.ArgumentTypeError(f"expected TASK=WEIGHT with TASK one of {', '.join(TASKS)}")
    return task, float(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.rate_matching",
        description="Fixed task weights with a learned-weight run's weight × learning-rate integral, from "
        "its log.csv (several logs, e.g. seeds, are pooled). Prints JSON.",
    )
    parser.add_argument("logs", nargs="+", type=Path, help="log.csv of learned-weight runs")
    parser.add_argument(
        "--weights",
        nargs="+",
        type=_weight,
        metavar="TASK=WEIGHT",
        help="fixed weights to scale: also print k, their factor matched to the runs' integral",
    )
    parser.add_argument(
        "--clip-norm",
        type=float,
        metavar="C",
        help="also print each log's step length Σ lr·min(‖g‖, C) (C: the runs' optim.grad_clip_norm)",
    )
    args = parser.parse_args(argv)
    weights = dict(args.weights) if args.weights else None
    try:
        report = matching([read_schedule(path) for path in args.logs], weights)
        if args.clip_norm is not None:
            report["step_length"] = {str(path): step_length(path, args.clip_norm) for path in args.logs}
    except (OSError, ValueError) as error:  # ScheduleError is a ValueError
        print(f"rate_matching: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
