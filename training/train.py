"""`scene-train`: train the three-head model with learned task-uncertainty weighting.

    scene-train --config configs/default.yaml [key=value ...]
    torchrun --nproc_per_node=K -m training --config configs/default.yaml

The run directory receives ``log.csv`` (losses, σ and learning rate per logged step),
``last.pt`` (the latest checkpoint; ``resume=PATH`` continues from any checkpoint),
``metrics.json`` (final validation metrics) and ``sigma.png`` (σ per task over steps).

This module is the recipe; where the process runs is `training.placement`, the
optimiser and its schedule `training.optimization`, and what the run writes as it goes
`training.run_log`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from scene_contract.model import TASKS
from training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    stages_before,
    start_from,
)
from training.class_weights import class_weights, pixel_counts
from training.config import ConfigError, TrainConfig, load_config
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
from training.optimization import apply_optim_settings, poly_lr
from training.optimization import build_optimizer as build_optimizer
from training.optimization import clip_gradients as clip_gradients
from training.placement import Placement, out_of_time
from training.placement import setup_placement as setup_placement
from training.run_log import LOG_COLUMNS as LOG_COLUMNS
from training.run_log import RunLog, append_eval, log_step, plot_sigma
from training.weighting import LossWeighting, NonFiniteLossError, build_weighting_from_config, check_finite


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


@dataclass
class TrainingState:
    """What a run trains and checkpoints: the network, its loss weighting and their optimiser."""

    model: SceneNetwork
    weighting: LossWeighting
    optimizer: torch.optim.Optimizer
    # The runs this one started from (`training.checkpoint.stages_before`), for the card.
    earlier_stages: list[dict[str, Any]] = field(default_factory=list)


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
        state.earlier_stages = stages_before({"config": config})
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
    state.earlier_stages = stages_before(saved)
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
    log = RunLog(Path(config.run_dir), start_step) if placement.is_main else None
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
        if deadline is not None and done < end_step and out_of_time(deadline, placement):
            progress.close()
            return done
    progress.close()
    return end_step


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
        append_eval(run_dir, step, metrics)


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
        earlier_stages=state.earlier_stages,
    )


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
