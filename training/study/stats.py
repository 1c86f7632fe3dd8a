"""The study's statistics: mean ± std over seeds, paired non-inferiority, Δm% and mean rank."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from scene_contract.model import TASKS
from training.study.config import TASK_METRICS, Comparison

# One-sided 95% quantiles of Student's t for 1..30 degrees of freedom; beyond 30 the
# value for 30 is used, slightly wider than the exact one.
_T95 = (
    6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812,
    1.796, 1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725,
    1.721, 1.717, 1.714, 1.711, 1.708, 1.706, 1.703, 1.701, 1.699, 1.697,
)  # fmt: skip


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
    """One row per arm: seeds, mean ± std of each trained task's test metric, mean clip rate.

    ``clip_rate`` is the mean over seeds of the share of steps whose gradient norm the
    clip bound cut (None unless every run recorded it): where it binds, a larger loss
    weight no longer means a larger step, which the rate-matched arms rely on.
    """
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
            rates = [r["clip_rate"] for r in mine if r.get("clip_rate") is not None]
            row["clip_rate"] = statistics.fmean(rates) if len(rates) == len(mine) else None
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
