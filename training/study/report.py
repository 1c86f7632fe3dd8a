"""The study's report: every finished run gathered into ``results.json``, ``table.md`` and plots.

``results.json`` holds every run's raw numbers (and is what ``--restore`` reads back);
``table.md`` the mean ± std over seeds, Δm% and mean rank, the comparisons and the grids.
"""

from __future__ import annotations

import json
import math
from typing import Any

from scene_contract.model import TASKS
from training.study.config import TASK_METRICS, Pilot, StudyConfig
from training.study.plan import FAILED, plan, point_label, read_result, select_grid_point, study_seeds
from training.study.plots import plot_grid, plot_sigmas
from training.study.stats import compare, multitask_scores, summarise

_DIGITS = {"semantic_miou": 1, "instance_mean_error_px": 2, "inverse_depth_mean_error": 4}


def write_report(study: StudyConfig, pilot: bool = False) -> dict[str, Any]:
    """Gather every finished run under the study's folder into JSON, Markdown and plots."""
    root = study.out / "pilot" if pilot else study.out
    arms = study.pilot.arms if pilot and study.pilot else [a.name for a in study.arms if a.grid is None]
    runs = plan(study, [] if pilot else study_seeds(study, lambda _: None), pilot)
    results = [r for r in (read_result(run.run_dir) for run in runs) if r is not None]
    failed = [str(run.run_dir) for run in runs if (run.run_dir / FAILED).is_file()]
    rows = summarise(results, arms)
    comparisons = [] if pilot else _comparisons(study, results, arms)
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


def _comparisons(study: StudyConfig, results: list[dict[str, Any]], arms: list[str]) -> list[dict[str, Any]]:
    """Each of the study's comparisons, paired over the seeds both arms have finished."""
    # Only the metrics of the tasks an arm trains: a single-task arm is compared on its task.
    by_seed = {
        name: {
            r["seed"]: {TASK_METRICS[t][0]: r["test"][TASK_METRICS[t][0]] for t in r["tasks"]}
            for r in results
            if r["arm"] == name and r["grid_point"] is None
        }
        for name in arms
    }
    return [
        {"arm": c.arm, "reference": c.reference, "rows": compare(by_seed[c.arm], by_seed[c.reference], c)}
        for c in study.comparisons
    ]


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


# ---------------------------------------------------------------- table.md


def markdown(study: StudyConfig, report: dict[str, Any], pilot: bool) -> str:
    """``table.md``: the arms over seeds, Δm% and mean rank, the pilot rule, comparisons, grids."""
    lines = _table_lines(study, report, pilot)
    if report.get("multitask"):
        lines += _multitask_lines(report["multitask"])
    if pilot and "pilot" in report:
        lines += _pilot_lines(report["pilot"])
    for comparison in report["comparisons"]:
        lines += _comparison_lines(comparison)
    for name, selection in report["grid_selection"].items():
        lines += _grid_lines(study, report["results"], name, selection)
    return "\n".join(lines) + "\n"


def _table_lines(study: StudyConfig, report: dict[str, Any], pilot: bool) -> list[str]:
    ev = study.evaluation
    lines = [
        f"# {'Pilot of ' if pilot else ''}{study.path.name}",
        "",
        f"{report['runs_finished']} of {report['runs_planned']} runs finished"
        + (f", {len(report['runs_failed'])} failed" if report["runs_failed"] else "")
        + f". Test: procedural `{ev.split}` split, seed {ev.seed}, {ev.count} scenes. "
        "Mean ± standard deviation over seeds; clipped steps: the mean share of steps whose "
        "gradient norm the clip bound cut." + _restored_text(report["results"]),
        "",
        "| arm | weights sem / inst / depth | seeds | "
        + " | ".join(m[1] for m in TASK_METRICS.values())
        + " | clipped steps |",
        "|---|---|---|" + "---|" * (len(TASK_METRICS) + 1),
    ]
    for row in report["table"]:
        cells = [_cell(row["metrics"].get(key), _DIGITS[key]) for key, _, _ in TASK_METRICS.values()]
        seeds = ", ".join(map(str, row["seeds"])) or "none yet"
        clipped = "–" if row.get("clip_rate") is None else f"{row['clip_rate']:.0%}"
        lines.append(
            f"| {row['arm']} | {row.get('weights', '')} | {seeds} | " + " | ".join(cells) + f" | {clipped} |"
        )
    return lines


def _restored_text(results: list[dict[str, Any]]) -> str:
    sources = sorted({r["restored_from"] for r in results if "restored_from" in r})
    if not sources:
        return ""
    count = sum(1 for r in results if "restored_from" in r)
    return f" {count} run(s) were trained elsewhere and restored from {', '.join(sources)}."


def _cell(metric: dict[str, Any] | None, digits: int) -> str:
    if metric is None:
        return "–"
    std = "" if metric["std"] is None else f" ± {metric['std']:.{digits}f}"
    return f"{metric['mean']:.{digits}f}{std}"


def _multitask_lines(multitask: dict[str, dict[str, float | None]]) -> list[str]:
    lines = [
        "",
        "Δm%: mean relative change from the single-task arms over the arm's tasks, worse positive "
        "(lower is better); mean rank among the three-task arms (1 = best).",
        "",
        "| arm | Δm% | mean rank |",
        "|---|---|---|",
    ]
    for arm, score in multitask.items():
        delta, rank = score["delta_m_percent"], score["mean_rank"]
        delta_text = "–" if delta is None else f"{delta:+.1f}"
        lines.append(f"| {arm} | {delta_text} | {'–' if rank is None else f'{rank:.2f}'} |")
    return lines


def _pilot_lines(decision: dict[str, Any]) -> list[str]:
    return ["", f"Pilot rule: mIoU standard deviation per arm {decision['miou_std']}, limit "
            f"{decision['miou_std_limit']} points: "
            + ("not complete yet." if not decision["complete"] else
               f"over it, the study uses seeds {decision['seeds']}." if decision["over_limit"] else
               "within it, the study keeps its seeds.")]  # fmt: skip


def _comparison_lines(comparison: dict[str, Any]) -> list[str]:
    lines = [
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
            "–" if row["bound"] is None else f"{row['bound']:+.4g}" + (" (> −margin)" if higher else " (< 0)")
        )
        holds = {None: "too few seeds", True: "yes", False: "no"}[row["holds"]]
        lines.append(
            f"| {row['label']} | {len(row['seeds'])} | {row['difference']:+.4g} | {row['relative']:+.1%} "
            f"| {margin} | {bound} | {holds} |"
        )
    return lines


def _grid_lines(
    study: StudyConfig, results: list[dict[str, Any]], name: str, selection: dict[str, Any] | None
) -> list[str]:
    """Each point of the grid arm ``name``: validation figures, score, test mIoU; the chosen one marked."""
    arm = study.arm(name)
    assert arm.grid is not None
    lines = [
        "",
        f"## Fixed-weight grid {name} ({_seeds_text(arm.grid.seeds)}, chosen on the validation split by "
        f"{arm.grid.select})",
        "",
    ]
    if len(arm.grid.seeds) > 1:
        lines += [
            "One row per run; the score ranks each point's validation metrics averaged over its seeds.",
            "",
        ]
    lines += [
        "| weights sem / inst / depth | val mIoU % | val instance px | val inv. depth 1/m | score "
        "| test mIoU % |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
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
    if selection is not None and "widening" in selection:
        lines += ["", _widening_text(selection["widening"])]
    return lines


def _seeds_text(seeds: tuple[int, ...]) -> str:
    return ("seeds " if len(seeds) > 1 else "seed ") + ", ".join(map(str, seeds))


def _widening_text(widening: dict[str, Any]) -> str:
    added = ", ".join(widening["added"]) or "none"
    if widening["inside"]:
        return f"The optimum is inside the grid (points added by widening: {added})."
    edges = ", ".join(widening["on_edge"])
    reason = "the grid is at its max_points" if widening["capped"] else "no new point lies beyond it"
    return f"The optimum is still on the grid's edge ({edges}): {reason}. Points added by widening: {added}."
