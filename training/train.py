"""`scene-train`: train the three-head model with learned task-uncertainty weighting.

    scene-train --config configs/default.yaml [key=value ...]
    torchrun --nproc_per_node=K -m training --config configs/default.yaml

The run directory receives ``log.csv`` (losses, σ and learning rate per logged step),
``last.pt`` (the latest checkpoint; ``resume=PATH`` continues from any checkpoint),
``metrics.json`` (final validation metrics) and ``sigma.png`` (σ per task over steps).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from scene_contract.model import TASKS
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, start_from
from training.class_weights import class_weights, pixel_counts
from training.config import ConfigError, OptimConfig, TrainConfig, load_config
from training.data.camvid import CamVidScenes
from training.data.classes import CLASSES
from training.data.sample import DataConfigError
from training.dataset import (
    MixedStepSampler,
    MixedTaskDataset,
    batch_to,
    build_scenes,
    build_training_sources,
)
from training.evaluate import evaluate
from training.losses import labelled_tasks, task_losses
from training.model import SceneNetwork, build_model
from training.weighting import LossWeighting, NonFiniteLossError, build_weighting_from_config, check_finite

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


@dataclass
class Placement:
    """Where this training process runs: its rank among ``world_size`` and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"


class Objective(nn.Module):
    """Model + loss weighting as one module, so DDP also averages the gradients of the learned s_i."""

    class_weights: Tensor | None

    def __init__(
        self, model: SceneNetwork, weighting: LossWeighting, class_weights: Tensor | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.weighting = weighting
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, batch: dict[str, Tensor], autocast: Any) -> tuple[Tensor, dict[str, Tensor]]:
        with autocast:
            outputs = self.model(batch["image"])
        # Losses in float32 whatever the autocast precision.
        losses = task_losses(
            {k: v.float() for k, v in outputs.items()}, batch, class_weights=self.class_weights
        )
        tasks = self.weighting.tasks
        total, _ = self.weighting({t: losses[t] for t in tasks}, labelled_tasks(batch, tasks))
        return total, losses


def build_optimizer(model: nn.Module, weighting: LossWeighting, config: TrainConfig) -> torch.optim.Optimizer:
    """``optim.name``'s optimiser: the network in the first group, the weighting's s_i after it."""
    optim = config.optim
    groups: list[dict[str, Any]] = [{"params": list(model.parameters()), "weight_decay": optim.weight_decay}]
    groups += weighting.parameter_groups(_log_variance_lr(config))
    optimizer: torch.optim.Optimizer
    if optim.name == "adam":
        optimizer = torch.optim.AdamW(groups, lr=optim.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov)
    apply_optim_settings(optimizer, config)
    return optimizer


def _log_variance_lr(config: TrainConfig) -> float:
    rate = config.optim.log_variance_lr
    return config.optim.lr if rate is None else rate


def apply_optim_settings(optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
    """Set rates, decay and momentum from ``config``: the first group is the model's, the rest the s_i.

    Also called after loading a checkpoint's optimizer state, which would otherwise
    bring back the old run's settings along with its momentum buffers.
    """
    optim = config.optim
    for index, group in enumerate(optimizer.param_groups):
        group["base_lr"] = optim.lr if index == 0 else _log_variance_lr(config)
        group["lr"] = group["base_lr"]
        group["weight_decay"] = optim.weight_decay if index == 0 else 0.0
        if optim.name == "sgd":
            group["momentum"], group["nesterov"] = optim.momentum, optim.nesterov


def poly_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, power: float) -> float:
    """Set every group's rate to ``base_lr · (1 − step / total_steps)^power``; returns the model's."""
    factor = (1.0 - step / total_steps) ** power
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return float(optimizer.param_groups[0]["lr"])


def clip_gradients(model: nn.Module, weighting: LossWeighting, optim: OptimConfig, step: int) -> Tensor:
    """Clip the network's gradient norm and, separately, each log-variance's gradient;
    returns the network's gradient norm before clipping (a 0-d tensor, no host sync).

    The two never share a norm: clipped together, a large network gradient would
    scale the s_i's gradients down with it (by the network's clip factor, most in the
    first steps) and slow σ for reasons that have nothing to do with the task losses.
    Raises `NonFiniteLossError` before a non-finite update can reach the weights.
    """
    network_norm = nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip_norm or math.inf)
    log_variance_grads = [p.grad for p in weighting.parameters() if p.grad is not None]
    weighting_norm = nn.utils.get_total_norm(log_variance_grads)
    if not (torch.isfinite(network_norm) and torch.isfinite(weighting_norm)):
        raise NonFiniteLossError(
            f"non-finite gradient at step {step} (network norm {network_norm.item()}, "
            f"log-variance norm {weighting_norm.item()})"
        )
    if optim.log_variance_grad_clip is not None:
        for grad in log_variance_grads:
            grad.clamp_(-optim.log_variance_grad_clip, optim.log_variance_grad_clip)
    return network_norm


def setup_placement(config: TrainConfig) -> Placement:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError(f"device: {config.device} requested but CUDA is not available here")
    if use_cuda:
        if world_size > 1:
            index = local_rank
        else:  # "auto" and "cuda" mean the first GPU; "cuda:N" names one
            index = (torch.device(config.device).index or 0) if config.device.startswith("cuda") else 0
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Placement(rank, world_size, device)


@dataclass
class TrainingState:
    """What a run trains and checkpoints: the network, its loss weighting and their optimiser."""

    model: SceneNetwork
    weighting: LossWeighting
    optimizer: torch.optim.Optimizer


def train(config: TrainConfig, placement: Placement) -> dict[str, Any]:
    """The recipe; returns the final validation metrics ({} when ``stop_at`` pauses the run).

    Resuming reproduces an uninterrupted run exactly, which fixes the order below:
    the seed, then the model's random initialisation, then the checkpoint's RNG state.
    """
    torch.manual_seed(config.seed)
    state = build_training_state(config, placement)
    end_step = config.stop_at or config.steps
    start_step = resume(config, placement, state, end_step) if config.resume else 0
    if config.init_from and not config.resume:
        fresh = start_from(config.init_from, state.model, state.weighting, config)
        print(
            f"init_from: {config.init_from}; built anew: {', '.join(fresh) if fresh else 'nothing'}",
            file=sys.stderr,
        )
    objective = build_objective(state, placement, semantic_class_weights(config))
    loader = build_loader(config, placement, start_step)
    reached = train_steps(config, placement, state, objective, loader, start_step, end_step)
    if reached < config.steps:
        pause(config, placement, state, reached)
        return {}
    return finish(config, placement, state)


def build_training_state(config: TrainConfig, placement: Placement) -> TrainingState:
    if config.model.backbone_weights is None:
        # No file, no pretrained start: the checkpoint and the model card must not
        # record the expected checksum as if the run had started from it.
        config.model.backbone_sha256 = None
    try:
        model = build_model(config.model).to(placement.device)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(str(error)) from None
    if placement.on_cuda:
        model = model.to(memory_format=torch.channels_last)
    weighting = build_weighting_from_config(config.loss).to(placement.device)
    return TrainingState(model, weighting, build_optimizer(model, weighting, config))


def resume(config: TrainConfig, placement: Placement, state: TrainingState, end_step: int) -> int:
    """Load ``config.resume`` into ``state`` (weights, optimiser, RNG); returns its step."""
    assert config.resume is not None
    saved = load_checkpoint(config.resume)
    if saved["config"].optim.name != config.optim.name:
        # The other optimiser's state (momentum buffers or Adam's moments) cannot be carried over.
        raise ConfigError(
            f"resume: {config.resume} was trained with optim.name={saved['config'].optim.name}, "
            f"this config asks for {config.optim.name}"
        )
    try:
        state.model.load_state_dict(saved["model"])
        state.weighting.load_state_dict(saved["weighting"])
        if saved["optimizer"] is not None:
            state.optimizer.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        other: TrainConfig = saved["config"]
        raise CheckpointError(
            f"resume: {config.resume} does not fit this config (it has backbone "
            f"{other.model.backbone}, strategy {other.loss.strategy}, tasks {other.loss.tasks}): "
            f"{str(error).splitlines()[0]}"
        ) from None
    apply_optim_settings(state.optimizer, config)
    torch.set_rng_state(saved["rng"]["torch"])
    if placement.on_cuda and "cuda" in saved["rng"]:
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    start_step = int(saved["step"])
    if start_step >= end_step:
        raise ConfigError(
            f"resume: {config.resume} is already at step {start_step} of "
            + (f"stop_at={config.stop_at}" if end_step < config.steps else f"steps={config.steps}")
        )
    return start_step


def semantic_class_weights(config: TrainConfig) -> Tensor | None:
    """``loss.class_weighting``'s weights, counted over the CamVid training frames (``None``: unweighted)."""
    kind = config.loss.class_weighting
    if kind == "none":
        return None
    scenes = CamVidScenes(config.data.resolved_camvid_root(), split="train")
    counts, frame_pixels = pixel_counts(
        (scenes.semantic_labels(i) for i in range(len(scenes))), config.model.num_classes
    )
    weights = class_weights(kind, counts, frame_pixels)
    named = ", ".join(f"{c.name} {weights[c.train_id]:.2f}" for c in CLASSES if counts[c.train_id])
    print(f"semantic class weights ({kind}, {len(scenes)} CamVid frames): {named}", file=sys.stderr)
    return torch.from_numpy(weights)


def build_objective(
    state: TrainingState, placement: Placement, class_weights: Tensor | None = None
) -> nn.Module:
    weights = None if class_weights is None else class_weights.to(placement.device)
    objective: nn.Module = Objective(state.model, state.weighting, weights)
    if placement.world_size > 1:
        # A task with zero weight leaves its head without gradient; DDP must be told to expect that.
        unused = set(TASKS) - set(state.weighting.tasks)
        objective = DistributedDataParallel(objective, find_unused_parameters=bool(unused))
    return objective


def build_loader(config: TrainConfig, placement: Placement, start_step: int) -> DataLoader[dict[str, Tensor]]:
    """Batches of every configured source from ``start_step`` on, this process's share of each."""
    sources = build_training_sources(config.data, config.batch_size)
    sampler = MixedStepSampler(
        [len(source.scenes) for source in sources],
        [source.per_batch for source in sources],
        config.seed,
        start_step,
        config.data.hflip,
        placement.rank,
        placement.world_size,
    )
    return DataLoader(
        MixedTaskDataset(sources, config.seed, config.data.crop_size()),
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.data.workers,
        pin_memory=placement.on_cuda,
        persistent_workers=config.data.workers > 0,
        # Its own generator: drawing worker seeds from the global RNG would shift the
        # dropout masks of a resumed run away from those of an uninterrupted one.
        generator=torch.Generator().manual_seed(config.seed),
    )


def train_steps(
    config: TrainConfig,
    placement: Placement,
    state: TrainingState,
    objective: nn.Module,
    loader: DataLoader[dict[str, Tensor]],
    start_step: int,
    end_step: int,
) -> int:
    """Steps ``start_step`` to ``end_step``: update, log, checkpoint and evaluate on schedule.

    Returns the step reached: ``end_step``, or less once ``max_minutes`` have passed.
    """
    deadline = None if config.max_minutes is None else time.monotonic() + 60 * config.max_minutes
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if placement.on_cuda and config.amp else nullcontext()
    )
    log = _Log(Path(config.run_dir), start_step) if placement.is_main else None
    progress = tqdm(
        total=end_step,
        initial=start_step,
        desc="training",
        unit="step",
        file=sys.stderr,
        disable=not placement.is_main,
        dynamic_ncols=True,
    )
    batches = iter(loader)
    window_start, window_images = time.perf_counter(), 0
    bound = config.optim.grad_clip_norm or math.inf
    clipped = torch.zeros((), dtype=torch.int64, device=placement.device)
    for step in range(start_step, end_step):
        lr = poly_lr(state.optimizer, step, config.steps, config.optim.poly_power)
        batch = batch_to(next(batches), placement.device, channels_last=placement.on_cuda)
        total, losses = objective(batch, autocast)
        check_finite({t: losses[t] for t in state.weighting.tasks}, step)
        state.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = clip_gradients(state.model, state.weighting, config.optim, step)
        clipped += grad_norm > bound
        state.optimizer.step()
        window_images += config.batch_size * placement.world_size
        done = step + 1
        if log is not None and (done % config.log_every == 0 or done == end_step):
            elapsed = time.perf_counter() - window_start
            images_per_s = window_images / elapsed if elapsed > 0 else math.nan
            gradients = (grad_norm.item(), int(clipped.item()))
            log_step(log, progress, state.weighting, done, lr, total, losses, images_per_s, gradients)
            window_start, window_images = time.perf_counter(), 0
            clipped.zero_()
        progress.update(1)
        if placement.is_main:
            checkpoint_and_evaluate(config, placement, state, done)
        if deadline is not None and done < end_step and _out_of_time(deadline, placement):
            progress.close()
            return done
    progress.close()
    return end_step


def _out_of_time(deadline: float, placement: Placement) -> bool:
    """Whether ``deadline`` has passed; every process gets the main one's answer, so all stop together."""
    late = torch.tensor([float(time.monotonic() > deadline)], device=placement.device)
    if placement.world_size > 1:
        dist.broadcast(late, src=0)
    return bool(late.item())


def log_step(
    log: _Log,
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
    _, weights = _weights(weighting, losses)
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


def checkpoint_and_evaluate(
    config: TrainConfig, placement: Placement, state: TrainingState, step: int
) -> None:
    """``last.pt`` every ``checkpoint_every`` steps; validation every ``eval_every`` (not the last step)."""
    run_dir = Path(config.run_dir)
    if config.checkpoint_every and step % config.checkpoint_every == 0:
        _save(run_dir / "last.pt", config, step, state)
        if config.keep_checkpoints:
            _save(run_dir / f"step_{step:07d}.pt", config, step, state)
    if config.eval_every and step % config.eval_every == 0 and step < config.steps:
        metrics = validate(config, placement, state.model)
        _append_eval(run_dir, step, metrics)


def validate(
    config: TrainConfig, placement: Placement, model: SceneNetwork, progress: bool = False
) -> dict[str, Any]:
    return evaluate(
        model,
        build_scenes(config.data, "val"),
        batch_size=config.batch_size,
        device=placement.device,
        workers=config.data.workers,
        progress=progress,
    )


def pause(config: TrainConfig, placement: Placement, state: TrainingState, step: int) -> None:
    """End this invocation at ``stop_at``: checkpoint, and say how to go on."""
    if placement.is_main:
        last = Path(config.run_dir) / "last.pt"
        _save(last, config, step, state)
        print(f"stopped at step {step} of {config.steps}; resume={last} goes on", file=sys.stderr)
    if placement.world_size > 1:
        dist.barrier()


def finish(config: TrainConfig, placement: Placement, state: TrainingState) -> dict[str, Any]:
    """Validate, write ``metrics.json``, the final checkpoint and ``sigma.png``."""
    final: dict[str, Any] = {}
    if placement.is_main:
        run_dir = Path(config.run_dir)
        metrics = validate(config, placement, state.model, progress=True)
        final = {"step": config.steps, "sigma": state.weighting.sigma(), **metrics}
        _save(run_dir / "last.pt", config, config.steps, state, metrics)  # σ is in the weighting's state
        (run_dir / "metrics.json").write_text(json.dumps(final, indent=2))
        plot_sigma(run_dir / "log.csv", run_dir / "sigma.png")
    if placement.world_size > 1:
        dist.barrier()
    return final


def _weights(weighting: LossWeighting, losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    was_training = weighting.training
    weighting.eval()  # weighing for the log must not advance stateful strategies such as DWA
    with torch.no_grad():
        total, weights = weighting({t: losses[t].detach() for t in weighting.tasks})
    weighting.train(was_training)
    return total, weights


def _save(
    path: Path, config: TrainConfig, step: int, state: TrainingState, metrics: dict[str, Any] | None = None
) -> None:
    save_checkpoint(
        path,
        config=config,
        step=step,
        model=state.model,
        weighting=state.weighting,
        optimizer=state.optimizer,
        metrics=metrics,
    )


class _Log:
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


def _append_eval(run_dir: Path, step: int, metrics: dict[str, Any]) -> None:
    path = run_dir / "eval.csv"
    scalars = {"step": step} | {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(scalars))
        if new:
            writer.writeheader()
        writer.writerow(scalars)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scene-train",
        description="Train the semantic + instance + depth model with learned task-uncertainty loss "
        "weighting "
        "(Kendall, Gal & Cipolla 2018). Run under torchrun for DistributedDataParallel.",
        epilog="Overrides are dotted keys, e.g.: optim.lr=0.01 loss.strategy=fixed "
        "loss.weights='{semantic: 1, instance: 0, depth: 0}' steps=2000 run_dir=runs/x resume=runs/x/last.pt",
    )
    parser.add_argument("--config", type=Path, help="YAML config (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        train(config, setup_placement(config))
    except (ConfigError, CheckpointError, DataConfigError) as error:
        print(f"scene-train: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        last = Path(config.run_dir) / "last.pt"
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was saved yet"
        print(f"scene-train: stopped: {error}; {kept}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
