"""Where a training process runs: its rank, the world's size and its device.

Under torchrun the environment names the rank; alone, the process is rank 0 of 1.
Every process must stop at the same step, so decisions that depend on the clock are
taken by the main process and broadcast (`out_of_time`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from training.config import ConfigError, TrainConfig


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


def out_of_time(deadline: float, placement: Placement) -> bool:
    """Whether ``deadline`` has passed; every process gets the main one's answer, so all stop together."""
    late = torch.tensor([float(time.monotonic() > deadline)], device=placement.device)
    if placement.world_size > 1:
        dist.broadcast(late, src=0)
    return bool(late.item())
