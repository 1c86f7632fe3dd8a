"""What a training run writes as it goes: ``log.csv``, ``eval.csv`` and ``sigma.png``."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from scene_contract.model import TASKS
from training.weighting import LossWeighting

LOG_COLUMNS = (
    "step",
    "lr",
    "loss_total",
    *(f"loss_{t}" for t in TASKS),
    *(f"sigma_{t}" for t in TASKS),
    *(f"weight_{t}" for t in TASKS),
    "images_per_s",
    # The network's gradient norm before clipping, at the logged step, and how many steps
    # since the previous row had it above optim.grad_clip_norm (so were clipped).
    "grad_norm",
    "clipped_steps",
)


class RunLog:
    """``log.csv`` of the run; a resumed run keeps the rows up to its start, so one file covers it all."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "log.csv"
        kept: list[dict[str, str]] = []
        if start_step > 0 and self.path.exists():
            with self.path.open(newline="") as f:
                # Rows past the checkpoint were logged by the interrupted run and will be logged again.
                kept = [row for row in csv.DictReader(f) if int(row["step"]) <= start_step]
        self.file = self.path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=LOG_COLUMNS)
        self.writer.writeheader()
        self.writer.writerows(kept)

    def write(self, row: dict[str, float]) -> None:
        self.writer.writerow(row)
        self.file.flush()


def append_eval(run_dir: Path, step: int, metrics: dict[str, Any]) -> None:
    """One ``eval.csv`` row of the scalar metrics of a validation during training."""
    path = run_dir / "eval.csv"
    scalars = {"step": step} | {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(scalars))
        if new:
            writer.writeheader()
        writer.writerow(scalars)


def log_step(
    log: RunLog,
    progress: tqdm[Any],
    weighting: LossWeighting,
    step: int,
    lr: float,
    total: Tensor,
    losses: dict[str, Tensor],
    images_per_s: float,
    gradients: tuple[float, int] = (math.nan, 0),
) -> None:
    """One ``log.csv`` row, and the progress bar's losses, σ and throughput.

    ``gradients``: this step's network gradient norm before clipping, and the steps
    clipped since the previous row."""
    sigma = weighting.sigma()
    _, weights = _logged_weights(weighting, losses)
    row: dict[str, float] = {"step": step, "lr": lr, "loss_total": total.item()}
    row |= {f"loss_{t}": losses[t].item() for t in TASKS}
    row |= {f"sigma_{t}": sigma.get(t, math.nan) for t in TASKS}
    row |= {f"weight_{t}": weights.get(t, 0.0) for t in TASKS}
    row["images_per_s"] = images_per_s
    row["grad_norm"], row["clipped_steps"] = gradients
    log.write(row)
    progress.set_postfix_str(
        " ".join(f"{t[:4]} {losses[t].item():.3f}/σ{sigma[t]:.2f}" for t in weighting.tasks)
        + f" | {images_per_s:.1f} img/s"
    )


def _logged_weights(weighting: LossWeighting, losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    was_training = weighting.training
    weighting.eval()  # weighing for the log must not advance stateful strategies such as DWA
    with torch.no_grad():
        total, weights = weighting({t: losses[t].detach() for t in weighting.tasks})
    weighting.train(was_training)
    return total, weights


def plot_sigma(log_csv: Path, out: Path) -> None:
    """Plot each task's σ over steps from ``log.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with log_csv.open() as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    steps = [int(r["step"]) for r in rows]
    for task in TASKS:
        values = [float(r[f"sigma_{task}"]) for r in rows]
        if not all(math.isnan(v) for v in values):
            ax.plot(steps, values, label=task)
    ax.set_xlabel("step")
    ax.set_ylabel("σ (task uncertainty)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Learned task uncertainty σ = exp(s / 2)")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
