"""A fixed-weight grid: its points, the point chosen on validation, and widening it until
its optimum is inside.

The chosen point is read from the grid's finished runs (validation metrics averaged
over the grid's seeds). With ``widen``, a grid whose optimum has no trained neighbour
on one side of a searched weight grows by the point beyond it (`beyond_edges`); the
points it adds become runs of the study, and the selection waits until the optimum is
inside (or the grid is at ``max_points``, and the report says it is still on the edge).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from scene_contract.model import TASKS
from training.study.config import TASK_METRICS, Arm, Grid, StudyConfig
from training.study.folders import FAILED, point_label, read_result


@dataclass(frozen=True)
class GridState:
    """Every point to train (configured, then added by widening) and the selection, once there is one."""

    points: list[dict[str, float]]
    selection: dict[str, Any] | None


def grid_points(study: StudyConfig, grid_arm: Arm) -> list[dict[str, float]]:
    """The grid's points as far as its finished runs tell: the configured ones, then those widening added."""
    return grid_state(study, grid_arm).points


def select_grid_point(study: StudyConfig, grid_arm: Arm) -> dict[str, Any] | None:
    """The grid point chosen on the validation split, or None while a grid run is unfinished
    (or, with ``widen``, while the grid still grows).

    Failed points (non-finite loss in any seed) are out of the running. ``mean_rank``:
    each point is ranked on the metric of each task the grid weighs (1 = best; ties
    share the better rank) and the lowest mean rank wins; ties go to the earlier point.
    """
    return grid_state(study, grid_arm).selection


def grid_state(study: StudyConfig, grid_arm: Arm) -> GridState:
    """Widen round by round while every run of the grid so far is finished and its optimum is on an edge."""
    grid = grid_arm.grid
    assert grid is not None
    combinations = grid.combinations()
    configured = len(grid.points())
    while True:
        points = _unique(grid.point(c) for c in combinations)
        ranking = _rank(study, grid_arm, points)
        if ranking is None or grid.widen is None:
            return GridState(points, ranking)
        best = next(c for c in combinations if grid.point(c) == ranking["weights"])
        edges = beyond_edges(combinations, best, searched_tasks(grid), grid.widen.factor)
        new = _unique(grid.point(c) for _, _, c in edges)
        new = [p for p in new if p not in points]
        capped = bool(new) and len(points) + len(new) > grid.widen.max_points
        if not new or capped:
            widening = {
                "inside": not edges,
                "on_edge": [f"{task} {side}" for task, side, _ in edges],
                "added": [point_label(p) for p in points[configured:]],
                "capped": capped,
            }
            return GridState(points, ranking | {"widening": widening})
        combinations += [c for _, _, c in edges if grid.point(c) in new]


def searched_tasks(grid: Grid) -> list[str]:
    """The tasks whose weight the grid varies (two or more values)."""
    return [task for task, values in grid.weights.items() if len(set(values)) > 1]


def beyond_edges(
    combinations: list[dict[str, float]], best: dict[str, float], searched: list[str], factor: float
) -> list[tuple[str, str, dict[str, float]]]:
    """Where ``best`` (raw values) is on the grid's edge: (task, ``below``/``above``, the point beyond).

    Along each searched task, the line through ``best`` holds the combinations equal to
    it in every other task; without one below (and ``best``'s weight above 0) the
    combination with that weight divided by ``factor`` is beyond it, without one above
    the combination with it multiplied. An empty list: the optimum is inside.
    """
    edges = []
    for task in searched:
        line = [c[task] for c in combinations if all(c[o] == best[o] for o in c if o != task)]
        value = best[task]
        if value > 0 and not any(v < value for v in line):
            edges.append((task, "below", best | {task: value / factor}))
        if not any(v > value for v in line):
            edges.append((task, "above", best | {task: value * factor}))
    return edges


def _unique(points: Any) -> list[dict[str, float]]:
    unique: list[dict[str, float]] = []
    for point in points:
        if point not in unique:
            unique.append(point)
    return unique


def _rank(study: StudyConfig, grid_arm: Arm, points: list[dict[str, float]]) -> dict[str, Any] | None:
    """The best of ``points`` on validation, or None while one of their runs is unfinished."""
    grid = grid_arm.grid
    assert grid is not None
    candidates = []
    for point in points:
        val = _mean_val(study, grid_arm, point, grid.seeds)
        if val is None:
            return None
        if val:
            candidates.append((point, val))
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


def _mean_val(
    study: StudyConfig, grid_arm: Arm, point: dict[str, float], seeds: tuple[int, ...]
) -> dict[str, float] | None:
    """The point's validation metrics averaged over the grid's seeds; ``{}`` if a seed failed,
    None while one is unfinished."""
    vals = []
    for seed in seeds:
        run_dir = study.out / grid_arm.name / point_label(point) / f"seed{seed}"
        result = read_result(run_dir)
        if result is None:
            if (run_dir / FAILED).is_file():
                return {}
            return None
        vals.append(result["val"])
    if len(vals) == 1:
        return dict(vals[0])
    keys = [m for m, _, _ in TASK_METRICS.values() if all(m in v for v in vals)]
    return {key: statistics.fmean(v[key] for v in vals) for key in keys}
