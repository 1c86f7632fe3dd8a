"""The optimiser of a training run: its parameter groups, learning-rate schedule and clipping.

The network is always the first parameter group and the loss weighting's learned s_i
the groups after it, so rates, decay and clipping can treat the two apart.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from training.config import OptimConfig, TrainConfig
from training.weighting import LossWeighting, NonFiniteLossError


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
