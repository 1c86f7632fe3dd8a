"""Training throughput (images/s) of a config on this machine.

    python -m bench.train_throughput --config configs/default.yaml [--steps 12] [--runs 3]

Times full optimisation steps (data loading, forward, the three task losses,
uncertainty weighting, backward, SGD) after a warm-up, ``runs`` times, and reports
the median. The baseline, timed in the same run, is the same model trained on
semantic segmentation alone (fixed weights 1/0/0), so the ratio is the price of
the two extra tasks.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.utils.data import DataLoader

from training.config import TrainConfig, load_config
from training.dataset import StepSampler, TaskDataset, batch_to, build_scenes
from training.model import SceneModel, count_parameters
from training.train import Objective, build_optimizer, build_weighting_from_config


def images_per_second(config: TrainConfig, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    device = torch.device("cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu")
    model = SceneModel(config.model).to(device)
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
            start = time.perf_counter()
        total, _ = objective(batch_to(next(batches), device), autocast)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    single = load_config(
        args.config,
        [*args.overrides, "loss.strategy=fixed", "loss.weights={semantic: 1, instance: 0, depth: 0}"],
    )
    print(
        f"{config.model.backbone}, {count_parameters(SceneModel(config.model)) / 1e6:.2f} M parameters, "
        f"batch {config.batch_size} of {config.data.height}x{config.data.width}, "
        f"{config.data.workers} loader workers, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()}"
    )
    three, one = [], []
    for run in range(args.runs):
        three.append(images_per_second(config, args.steps, args.warmup))
        one.append(images_per_second(single, args.steps, args.warmup))
        print(f"run {run + 1}: three tasks {three[-1]:.2f} img/s, semantic only {one[-1]:.2f} img/s")
    print(f"median three tasks: {statistics.median(three):.2f} img/s")
    print(f"median semantic only (baseline): {statistics.median(one):.2f} img/s")
    print(f"three-task cost: {statistics.median(one) / statistics.median(three):.2f}x the time per image")


if __name__ == "__main__":
    main()
