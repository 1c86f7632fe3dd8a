"""The study's plots: learned σ over training, and test metrics across a fixed-weight grid."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

from scene_contract.model import TASKS
from training.study.config import TASK_METRICS, StudyConfig
from training.study.plan import point_label


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
        ax.set_title(f"{name}: learned σ per task\n({seeds}, one line each)", fontsize=10)
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
                label=f"grid, seed {', '.join(map(str, arm.grid.seeds)) if arm.grid else ''}",
            )
            learned = sorted({r["arm"] for r in results if r["strategy"].startswith("uncertainty")
                              and r["grid_point"] is None and set(tasks) <= set(r["tasks"])})  # fmt: skip
            for index, name in enumerate(learned):
                mean = statistics.fmean(
                    r["test"][key] for r in results if r["arm"] == name and r["grid_point"] is None
                )
                colour = f"C{index}"  # one colour per learned arm, the same in every panel
                ax.axhline(mean, linestyle="--", linewidth=1, color=colour, label=f"{name} (mean over seeds)")
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
