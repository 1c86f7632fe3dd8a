"""Training throughput (images/s) of a config on this machine.

    python -m bench.train_throughput --config configs/default.yaml [--steps 12] [--runs 3] [--jobs J]

Times full optimisation steps (data loading, forward, the three task losses,
uncertainty weighting, backward, SGD) after a warm-up, ``runs`` times, and reports
the median. The baseline, timed in the same run, is the same model trained on
semantic segmentation alone (fixed weights 1/0/0), so the ratio is the price of
the two extra tasks. With ``--jobs J``, each run also trains J copies at once in
worker processes with ``cores // J`` torch threads each (how ``scene-study --jobs``
trains) and reports their summed images/s against the one process with every thread.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch
from torch.utils.data import DataLoader

from training.config import TrainConfig, load_config
from training.dataset import StepSampler, TaskDataset, batch_to, build_scenes
from training.model import build_model, count_parameters
from training.train import Objective, build_optimizer
from training.weighting import build_weighting_from_config


def images_per_second(
    config: TrainConfig, steps: int, warmup: int, after_warmup: Callable[[], object] | None = None
) -> float:
    torch.manual_seed(0)
    device = torch.device("cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu")
    model = build_model(config.model).to(device)
    weighting = build_weighting_from_config(config.loss).to(device)
    objective = Objective(model, weighting)
    optimizer = build_optimizer(model, weighting, config)
    scenes = build_scenes(config.data, "train")
    loader = DataLoader(
        TaskDataset(scenes),
        batch_size=config.batch_size,
        sampler=StepSampler(len(scenes), config.batch_size, config.seed),
        num_workers=config.data.workers,
        persistent_workers=config.data.workers > 0,
    )
    batches = iter(loader)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            if after_warmup is not None:
                after_warmup()
            start = time.perf_counter()
        total, _ = objective(batch_to(next(batches), device), autocast)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config.batch_size / (time.perf_counter() - start)


def images_per_second_in_processes(config: TrainConfig, steps: int, warmup: int, jobs: int) -> float:
    """Summed images/s of ``jobs`` processes training ``config`` at once, ``cores // jobs`` threads each.

    Each process warms up, then waits for the others at a barrier, so the timed steps
    of all of them start together and each rate is measured while the others train.
    """
    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    context = multiprocessing.get_context("spawn")  # not fork: this process has run torch
    barrier = context.Barrier(jobs)
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker, initargs=(threads, barrier)
    ) as pool:
        return sum(pool.map(_timed_together, [config] * jobs, [steps] * jobs, [warmup] * jobs))


# Set in each worker process by `_start_worker`: where the workers meet after warm-up.
_barrier: Any = None


def _start_worker(threads: int, barrier: Any) -> None:
    global _barrier
    torch.set_num_threads(threads)
    _barrier = barrier


def _timed_together(config: TrainConfig, steps: int, warmup: int) -> float:
    return images_per_second(config, steps, warmup, after_warmup=_barrier.wait)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="also time this many processes training at once")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.jobs <= 0:
        parser.error(f"--jobs must be positive, got {args.jobs}")
    config = load_config(args.config, args.overrides)
    single = load_config(
        args.config,
        [*args.overrides, "loss.strategy=fixed", "loss.weights={semantic: 1, instance: 0, depth: 0}"],
    )
    print(
        f"{config.model.backbone}, {count_parameters(build_model(config.model)) / 1e6:.2f} M parameters, "
        f"batch {config.batch_size} of {config.data.height}x{config.data.width}, "
        f"{config.data.workers} loader workers, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()}"
    )
    three, one, parallel = [], [], []
    for run in range(args.runs):
        three.append(images_per_second(config, args.steps, args.warmup))
        one.append(images_per_second(single, args.steps, args.warmup))
        line = f"run {run + 1}: three tasks {three[-1]:.2f} img/s, semantic only {one[-1]:.2f} img/s"
        if args.jobs > 1:
            parallel.append(images_per_second_in_processes(config, args.steps, args.warmup, args.jobs))
            line += f", {args.jobs} processes at once {parallel[-1]:.2f} img/s in all"
        print(line, flush=True)
    print(f"median three tasks: {statistics.median(three):.2f} img/s")
    print(f"median semantic only (baseline): {statistics.median(one):.2f} img/s")
    print(f"three-task cost: {statistics.median(one) / statistics.median(three):.2f}x the time per image")
    if parallel:
        print(
            f"median {args.jobs} processes at once: {statistics.median(parallel):.2f} img/s in all, "
            f"{statistics.median(parallel) / statistics.median(three):.2f}x one process"
        )


if __name__ == "__main__":
    main()
