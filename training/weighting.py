"""Loss weighting: how the per-task losses become the one scalar the optimiser minimises.

Each strategy is a small ``nn.Module`` with a name in ``WEIGHTINGS``::

    weighting = build_weighting("uncertainty", tasks=("semantic", "depth"))
    total, weights = weighting(losses)  # losses: {"semantic": L_sem, "depth": L_depth, ...}

Every strategy keeps the contract of `training.weighting_contract.LossWeighting`
(what ``forward``, ``log_variance`` and ``parameter_groups`` promise, and how a task
without labels drops out); its names are importable from here too.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from scene_contract.model import TASKS
from training.config import ConfigError, LossConfig
from training.weighting_contract import CLASSIFICATION_TASKS as CLASSIFICATION_TASKS
from training.weighting_contract import LossWeighting as LossWeighting
from training.weighting_contract import NonFiniteLossError as NonFiniteLossError
from training.weighting_contract import check_finite as check_finite
from training.weighting_contract import likelihood_scale as likelihood_scale
from training.weighting_contract import validate_tasks


def _per_task(value: float | Mapping[str, float], tasks: tuple[str, ...], name: str) -> list[float]:
    if isinstance(value, Mapping):
        missing = [t for t in tasks if t not in value]
        if missing:
            raise ValueError(f"{name} lacks tasks {missing}")
        return [float(value[t]) for t in tasks]
    return [float(value)] * len(tasks)


class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty weighting, Kendall, Gal & Cipolla (CVPR 2018), Eq. 7 / 10.

    With a learned ``s_i = log σ_i²`` per task::

        total = Σ_i  c_i · exp(−s_i) · L_i  +  s_i / 2

    ``c_i = 1`` for classification, ``1/2`` for regression; ``s_i / 2 = log σ_i``. The
    total can go negative once a σ_i < 1; that is expected, watch the task losses.
    ``d total / d s_i = −c_i · exp(−s_i) · L_i + 1/2``: a task whose loss is large relative
    to its σ_i² pushes σ_i up (its weight down), a small one pulls it down.

    Args:
        tasks: tasks that take part (subset of ``TASKS``).
        initial_log_variance: initial ``s_i``, one value for all tasks or one per task.
            The paper reports robustness to anything in [-2, 5].

    Attributes:
        task_log_variance: ``ParameterDict`` task -> scalar ``s_i``.
    """

    learned = True

    def __init__(
        self,
        tasks: Iterable[str] = TASKS,
        initial_log_variance: float | Mapping[str, float] = 0.0,
    ) -> None:
        super().__init__(tasks)
        initial = _per_task(initial_log_variance, self.tasks, "initial_log_variance")
        self.task_log_variance = nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(s)) for t, s in zip(self.tasks, initial, strict=True)}
        )

    def _regulariser(self, log_variance: Tensor) -> Tensor:
        """The term that stops σ_i growing without bound: ``log σ_i = s_i / 2``."""
        return log_variance / 2

    def forward(
        self, losses: Mapping[str, Tensor], labelled: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        terms: list[Tensor] = []
        weights: list[Tensor] = []
        for task, loss in zip(self.tasks, self._selected(losses), strict=True):
            log_variance = self.task_log_variance[task]
            weight = likelihood_scale(task) * torch.exp(-log_variance)
            term = weight * loss + self._regulariser(log_variance)
            if labelled is not None:
                # where(), not a product: the unselected branch passes no gradient to s_i.
                term = torch.where(labelled[task], term, torch.zeros_like(term))
            terms.append(term)
            weights.append(weight.detach())
        # One device-to-host copy for all weights rather than one per task.
        logged = torch.stack(weights).tolist()
        return torch.stack(terms).sum(), dict(zip(self.tasks, logged, strict=True))

    @classmethod
    def config_options(cls, config: LossConfig) -> dict[str, Any]:
        return {"tasks": config.tasks, "initial_log_variance": config.init_log_variance}

    def log_variance(self) -> dict[str, float]:
        return {t: self.task_log_variance[t].item() for t in self.tasks}


class UncertaintyLog1pWeighting(UncertaintyWeighting):
    """Uncertainty weighting with a positive regulariser, after Liebel & Körner (2018),
    "Auxiliary Tasks in Multi-task Learning" (arXiv 1805.06334)::

        total = Σ_i  c_i / σ_i² · L_i  +  log(1 + σ_i²),    σ_i² = exp(s_i)

    ``log(1 + σ²) > 0``, so the total cannot go negative (Eq. 10's ``log σ`` rewards
    σ → 0 without bound below). Liebel & Körner use ``c_i = 1/2`` for every task; we keep
    Kendall's ``c_i`` (1 classification, 1/2 regression) so this strategy differs from
    "uncertainty" in the regulariser only. Same arguments as ``UncertaintyWeighting``.
    """

    def _regulariser(self, log_variance: Tensor) -> Tensor:
        # softplus(s) = log(1 + exp(s)) = log(1 + σ²), without overflow for large s.
        return softplus(log_variance)


class FixedWeighting(LossWeighting):
    """Hand-chosen constant weights::

        total = Σ_{i : w_i > 0}  w_i · L_i

    Tasks with weight 0 (or absent from ``weights``) are skipped, not multiplied by 0:
    ``0 · nan`` is nan, and a single-task run must not die of an untrained head's loss.
    Examples: ``{"semantic": 1}`` (single task), ``{t: 1/3 for t in TASKS}`` (unweighted
    sum), ``{"semantic": 0.89, "instance": 0.01, "depth": 0.1}`` (paper's grid search).

    Args:
        weights: task -> non-negative finite weight; at least one must be positive.
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        validate_tasks(weights)
        for task, weight in weights.items():
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"weight of task {task!r} must be finite and >= 0, got {weight}")
        participating = [t for t, w in weights.items() if w > 0]
        if not participating:
            raise ValueError(f"all task weights are zero: {dict(weights)}")
        super().__init__(participating)
        self.task_weight: dict[str, float] = {t: float(weights[t]) for t in self.tasks}

    def forward(
        self, losses: Mapping[str, Tensor], labelled: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        # An unlabelled task's loss is already an exact 0 and there is no regulariser.
        selected = self._selected(losses)
        terms = [self.task_weight[t] * loss for t, loss in zip(self.tasks, selected, strict=True)]
        total = torch.stack(terms).sum()
        return total, dict(self.task_weight)

    @classmethod
    def config_options(cls, config: LossConfig) -> dict[str, Any]:
        return {"weights": config.weights}

    def log_variance(self) -> dict[str, float]:
        return {t: math.log(likelihood_scale(t) / w) for t, w in self.task_weight.items()}


class DynamicWeightAverage(LossWeighting):
    """Dynamic Weight Average, Liu, Johns & Davison (CVPR 2019), "End-to-End Multi-Task
    Learning with Attention"::

        w_i(t) = K · exp(r_i(t−1) / T) / Σ_j exp(r_j(t−1) / T),   r_i(t−1) = L̄_i(t−1) / L̄_i(t−2)
        total  = Σ_i  w_i(t) · L_i

    K is the number of tasks and T the temperature. The paper's t counts epochs and L̄
    is the mean loss of an epoch; we train by steps, so an "epoch" here is a window of
    ``window`` consecutive ``forward`` calls in training mode, and L̄_i(t) the mean of the
    task's loss over window t. ``w_i = 1`` during the first two windows.

    The averages are updated inside ``forward`` while the module is in training mode
    (``.train()``, the default); in ``.eval()`` mode ``forward`` only weighs. With
    gradient accumulation a window therefore counts micro-batches. Non-finite losses are
    not recorded, so a skipped bad batch cannot poison the averages. The state (window
    sums, last two means, current weights, counters) is in ``state_dict`` for resuming.

    Args:
        tasks: tasks that take part (subset of ``TASKS``).
        temperature: T; larger values flatten the weights towards 1.
        window: training steps per averaging window.
    """

    window_loss_sum: Tensor
    window_mean_history: Tensor
    task_weight: Tensor

    def __init__(self, tasks: Iterable[str] = TASKS, temperature: float = 2.0, window: int = 100) -> None:
        super().__init__(tasks)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.temperature = float(temperature)
        self.window = int(window)
        count = len(self.tasks)
        self.register_buffer("window_loss_sum", torch.zeros(count))
        # Row 0: mean over window t−2, row 1: over window t−1.
        self.register_buffer("window_mean_history", torch.zeros(2, count))
        self.register_buffer("task_weight", torch.ones(count))
        self.steps_in_window = 0
        self.completed_windows = 0

    def forward(
        self, losses: Mapping[str, Tensor], labelled: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        stacked = torch.stack(self._selected(losses))
        total = (self.task_weight * stacked).sum()
        weights = dict(zip(self.tasks, self.task_weight.tolist(), strict=True))
        all_labelled = labelled is None or bool(torch.stack([labelled[t] for t in self.tasks]).all())
        # A window mean must not be pulled down by the zeros of unlabelled batches.
        if self.training and all_labelled:
            self._record(stacked.detach())
        return total, weights

    def _record(self, losses: Tensor) -> None:
        if not torch.isfinite(losses).all():
            return
        self.window_loss_sum += losses.to(self.window_loss_sum)
        self.steps_in_window += 1
        if self.steps_in_window < self.window:
            return
        self.window_mean_history[0] = self.window_mean_history[1]
        self.window_mean_history[1] = self.window_loss_sum / self.window
        self.window_loss_sum.zero_()
        self.steps_in_window = 0
        self.completed_windows += 1
        if self.completed_windows >= 2:
            previous, latest = self.window_mean_history
            rate = latest / previous.clamp(min=torch.finfo(previous.dtype).tiny)
            self.task_weight.copy_(len(self.tasks) * torch.softmax(rate / self.temperature, 0))

    @classmethod
    def config_options(cls, config: LossConfig) -> dict[str, Any]:
        return {"tasks": config.tasks, "temperature": config.dwa_temperature, "window": config.dwa_window}

    def log_variance(self) -> dict[str, float]:
        return {
            t: math.log(likelihood_scale(t) / w)
            for t, w in zip(self.tasks, self.task_weight.tolist(), strict=True)
        }

    def get_extra_state(self) -> dict[str, int]:
        return {
            "steps_in_window": self.steps_in_window,
            "completed_windows": self.completed_windows,
        }

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.steps_in_window = int(state["steps_in_window"])
        self.completed_windows = int(state["completed_windows"])


WEIGHTINGS: dict[str, type[LossWeighting]] = {
    "uncertainty": UncertaintyWeighting,
    "uncertainty_log1p": UncertaintyLog1pWeighting,
    "fixed": FixedWeighting,
    "dwa": DynamicWeightAverage,
}


def build_weighting(name: str, **options: Any) -> LossWeighting:
    """The strategy called ``name`` (a key of ``WEIGHTINGS``) built with ``options``.

    Raises ``ValueError`` listing the valid names for an unknown name, and listing the
    accepted options for options the strategy does not take.
    """
    try:
        strategy = WEIGHTINGS[name]
    except KeyError:
        raise ValueError(
            f"unknown loss weighting {name!r}; valid names: {', '.join(sorted(WEIGHTINGS))}"
        ) from None
    signature = inspect.signature(strategy)
    try:
        signature.bind(**options)
    except TypeError as err:
        accepted = ", ".join(signature.parameters)
        raise ValueError(
            f"invalid options for loss weighting {name!r}: {err}; accepted options: {accepted}"
        ) from None
    return strategy(**options)


def build_weighting_from_config(config: LossConfig) -> LossWeighting:
    """The strategy a run's ``loss`` section configures; `ConfigError` naming what is wrong."""
    strategy = WEIGHTINGS.get(config.strategy)
    options = strategy.config_options(config) if strategy is not None else {}
    try:
        return build_weighting(config.strategy, **options)
    except ValueError as error:
        raise ConfigError(f"loss.strategy: {error}") from None
