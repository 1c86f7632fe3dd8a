"""What every loss weighting promises, and the checks all of them share.

- ``forward(losses, labelled=None)`` takes one scalar loss per task (keys from
  ``TASKS``) and returns ``(total, weights)``: the total to back-propagate and, for
  logging, the factor each task loss was multiplied by. ``labelled`` (task -> bool
  scalar tensor, from `training.losses.labelled_tasks`) says which tasks had any
  labelled pixel in the batch; a task without one drops out of that step's total
  entirely (see "Missing labels" below). Only the strategy's ``tasks`` take part; other keys in
  ``losses`` are ignored, so a "semantic + depth" run can still compute (and log) the
  instance loss.
- ``log_variance()`` reports each task's s_i = log σ_i², and ``sigma()`` its σ_i =
  exp(s_i / 2). For the uncertainty strategies s_i is learned (the class attribute
  ``learned`` is True). For the others it is the s_i at which Eq. 10's data term would
  carry the same weight, ``w_i = c_i / σ_i²``, i.e. ``s_i = log(c_i / w_i)``, so the
  logged curves are comparable across strategies.
- ``parameter_groups(lr)`` is the optimiser group for the learned s_i, without weight
  decay (decay would pull σ towards 1 regardless of the data); it is empty for
  strategies that learn nothing. The module must live on the same device as the losses.
- ``config_options(loss_config)`` are the constructor's options from a run's
  ``loss`` section; `training.weighting.build_weighting_from_config` builds the configured strategy.

Here ``c_i = 1`` for classification (semantic) and ``1/2`` for regression (instance,
depth): the scale of the task's likelihood in Kendall, Gal & Cipolla (CVPR 2018).

Missing labels. Datasets label different tasks: CamVid frames carry semantics only.
Within a batch each task's loss is a mean over its labelled pixels, so samples without
labels for it add nothing. When no sample in the batch labels a task, its whole term
drops out of the step, the regulariser included: for the uncertainty strategies the
step's total is ``Σ_{i labelled} c_i · exp(−s_i) · L_i + s_i / 2``. Keeping ``s_i / 2``
alone would be a gradient of +1/2 on ``s_i`` with nothing to balance it, pushing σ_i up
on every such batch; dropping it leaves ``s_i`` exactly where it was. DWA does not
record a step in which any of its tasks is unlabelled.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from scene_contract.model import TASKS
from training.config import LossConfig

CLASSIFICATION_TASKS: frozenset[str] = frozenset({"semantic"})


def likelihood_scale(task: str) -> float:
    """``c_i`` of Eq. 10: 1 for a softmax likelihood, 1/2 for a Gaussian one."""
    return 1.0 if task in CLASSIFICATION_TASKS else 0.5


class NonFiniteLossError(RuntimeError):
    """A task loss is nan or inf; the message names the task(s) and the training step."""


def check_finite(losses: Mapping[str, Tensor], step: int) -> None:
    """Raise ``NonFiniteLossError`` if any task loss is nan or inf.

    Called before the weighted sum, so the error says which task diverged instead of
    just "total loss is nan".
    """
    if not losses:
        return
    # One device-to-host sync per step, not one per task.
    finite = torch.stack([torch.isfinite(loss).all() for loss in losses.values()]).tolist()
    bad = [
        f"{task} = {loss.item()}" for (task, loss), ok in zip(losses.items(), finite, strict=True) if not ok
    ]
    if bad:
        raise NonFiniteLossError(f"non-finite task loss at step {step}: {', '.join(bad)}")


def validate_tasks(tasks: Iterable[str]) -> tuple[str, ...]:
    """``tasks`` as a tuple; `ValueError` for an unknown, a repeated or no task."""
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; valid tasks: {', '.join(TASKS)}")
    if not tasks:
        raise ValueError(f"at least one task must take part; valid tasks: {', '.join(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"duplicate tasks in {list(tasks)}")
    return tasks


class LossWeighting(nn.Module, ABC):
    """A named strategy combining the task losses; see the module docstring for the contract.

    Attributes:
        tasks: the tasks whose losses enter the total, in ``TASKS`` order.
        learned: whether the strategy learns each σ_i (False: σ_i restates a weight).
    """

    learned: ClassVar[bool] = False

    def __init__(self, tasks: Iterable[str]) -> None:
        super().__init__()
        requested = set(validate_tasks(tasks))
        self.tasks: tuple[str, ...] = tuple(t for t in TASKS if t in requested)

    @abstractmethod
    def forward(
        self, losses: Mapping[str, Tensor], labelled: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """Weighted total (scalar tensor) and the per-task weights as floats for logging.

        ``labelled``: task -> bool scalar tensor, False for a task with no labelled
        pixel in the batch; such a task contributes nothing. ``None``: all labelled.
        """

    @classmethod
    @abstractmethod
    def config_options(cls, config: LossConfig) -> dict[str, Any]:
        """The constructor's options from a run's ``loss`` configuration."""

    @abstractmethod
    def log_variance(self) -> dict[str, float]:
        """s_i = log σ_i² per participating task (learned, or the equivalent of its weight)."""

    def sigma(self) -> dict[str, float]:
        """σ_i = exp(s_i / 2) per participating task."""
        return {t: math.exp(s / 2) for t, s in self.log_variance().items()}

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups for the learned weights: own ``lr``, no weight decay.

        Empty when the strategy learns nothing, so it can always be appended to the
        model's groups.
        """
        params = list(self.parameters())
        return [{"params": params, "lr": lr, "weight_decay": 0.0}] if params else []

    def _selected(self, losses: Mapping[str, Tensor]) -> list[Tensor]:
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise KeyError(f"losses lack tasks {missing}; got {sorted(losses)}")
        return [losses[t] for t in self.tasks]
