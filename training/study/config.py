"""The study config as types: arms, grids, comparisons, pilot, held-out scenes.

`training.study.parse.load_study` reads and checks a study file into these;
`training_config` turns an arm into the `TrainConfig` each of its runs trains with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from training.config import TrainConfig, load_config

# The metric of each task in the table: (result key, label, higher is better).
TASK_METRICS: dict[str, tuple[str, str, bool]] = {
    "semantic": ("semantic_miou", "mIoU %", True),
    "instance": ("instance_mean_error_px", "instance error px", False),
    "depth": ("inverse_depth_mean_error", "inverse-depth error 1/m", False),
}


class StudyConfigError(ValueError):
    """The study config is invalid; the message names the key."""


@dataclass(frozen=True)
class Widen:
    """How a grid grows while its optimum lies on its edge (`training.study.grid`).

    Along each searched task (one with two or more values), the optimum needs a
    trained point on both sides, the other weights held; where one is missing the
    point with that weight times ``factor`` (above) or divided by it (below) is
    added. A weight of 0 is an edge that cannot be passed. No round adds points that
    would take the grid past ``max_points``: the optimum is then reported as on the edge.
    """

    factor: float = 10.0
    max_points: int = 12


@dataclass(frozen=True)
class Grid:
    """A fixed-weight grid: every combination of the per-task values, trained with ``seeds``.

    ``normalise``: each combination is scaled to sum 1 (as the paper's weights do), and
    combinations that are multiples of one another are trained once. ``select``: how
    the best point is chosen on the validation split (metrics averaged over the grid's
    seeds): ``mean_rank`` (the lowest mean of its ranks on the three task metrics) or
    one metric key of `TASK_METRICS`. ``widen``: grow the grid until its optimum is inside.
    """

    weights: dict[str, list[float]]
    seeds: tuple[int, ...]
    select: str = "mean_rank"
    normalise: bool = True
    widen: Widen | None = None

    def combinations(self) -> list[dict[str, float]]:
        """The raw per-task values of every combination, before normalising."""
        tasks = list(self.weights)
        return [
            dict(zip(tasks, values, strict=True)) for values in product(*(self.weights[t] for t in tasks))
        ]

    def point(self, combination: dict[str, float]) -> dict[str, float]:
        """A combination as trained: normalised to sum 1 if the grid normalises."""
        total = sum(combination.values()) if self.normalise else 1.0
        # Three significant digits: readable folder names, and sums within 0.1% of 1.
        return {t: float(f"{v / total:.3g}") for t, v in combination.items()}

    def points(self) -> list[dict[str, float]]:
        """The configured points (without those widening adds), each once."""
        points: list[dict[str, float]] = []
        for combination in self.combinations():
            point = self.point(combination)
            if point not in points:
                points.append(point)
        return points


@dataclass(frozen=True)
class FromLearned:
    """Fixed weights read from the learned-weight arm ``arm``'s run with the same seed (its ``log.csv``).

    ``weights``: ``end_point`` (its weights at the last logged step, held fixed),
    ``rate_weighted`` (each task the arm weighs at the learned run's Σ lr·w / Σ lr) or
    ``rate_matched`` (the arm's own weights times k, matching the learned run's
    Σ lr·Σ w): `training.rate_matching`.
    """

    arm: str
    weights: str


@dataclass(frozen=True)
class Arm:
    """One arm of the study.

    Plain: trains ``overrides`` over the study's seeds. ``grid``: trains every grid
    point with the grid's seed. ``best_of``: the named grid arm's selected weights over
    the study's seeds. ``total_weight``: fixed weights scaled so that they sum to this
    number, or to the total weight that the named arm applied (its Σ_i weight_i averaged
    over training, from its ``log.csv``, in the run with the same seed). ``from_learned``:
    fixed weights derived from a learned-weight arm's run with the same seed.
    ``seeds``: the study's seeds this arm trains (``None``: all of them).
    """

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: Grid | None = None
    best_of: str | None = None
    total_weight: float | str | None = None
    from_learned: FromLearned | None = None
    seeds: list[int] | None = None

    def sources(self) -> list[str]:
        """The non-grid arms whose runs this arm's weights are read from."""
        named = [self.total_weight if isinstance(self.total_weight, str) else None]
        named.append(self.from_learned.arm if self.from_learned else None)
        return [name for name in named if name is not None]


@dataclass(frozen=True)
class Comparison:
    """``arm`` against ``reference`` over paired seeds: non-inferior within the margins.

    mIoU holds when the one-sided 95% lower bound of the mean paired difference is above
    ``-miou_points``; an error holds when the upper bound of ``arm - (1 + relative_error)
    · reference`` is below 0. Margins of 0 make it a test of being better.
    """

    arm: str
    reference: str
    miou_points: float = 1.5
    relative_error: float = 0.05


@dataclass(frozen=True)
class Pilot:
    """Arms trained with a few seeds and a short schedule to measure the spread between seeds.

    If any pilot arm's mIoU standard deviation exceeds ``miou_std_limit`` points, the
    study uses ``seeds_if_over`` instead of its ``seeds``.
    """

    arms: list[str]
    seeds: list[int]
    overrides: dict[str, Any]
    miou_std_limit: float
    seeds_if_over: list[int]


@dataclass(frozen=True)
class Evaluation:
    """The held-out scenes every run is scored on: procedural ``split`` of ``seed``."""

    split: str = "test"
    seed: int = 1000
    count: int = 500
    batch_size: int = 16


@dataclass(frozen=True)
class Scenes:
    """Procedural scenes rendered once to ``root/train`` and ``root/val``; training reads them."""

    root: Path
    train: int
    val: int
    seed: int = 0
    workers: int = 1


@dataclass(frozen=True)
class StudyConfig:
    path: Path
    base: Path
    overrides: dict[str, Any]
    out: Path
    seeds: list[int]
    chunk_steps: int
    evaluation: Evaluation
    arms: list[Arm]
    comparisons: list[Comparison]
    pilot: Pilot | None
    scenes: Scenes | None

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def arm_seeds(self, arm: Arm, seeds: list[int]) -> list[int]:
        """The seeds among ``seeds`` (the study's, or the pilot's larger set) that ``arm`` trains."""
        return seeds if arm.seeds is None else [s for s in seeds if s in arm.seeds]


def as_overrides(values: dict[str, Any]) -> list[str]:
    """``{"loss.weights": {"semantic": 1}}`` -> ``['loss.weights={"semantic": 1}']`` for `load_config`.

    JSON is valid YAML, so each value reads back exactly as it was written.
    """
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def training_config(
    study: StudyConfig,
    arm: Arm,
    extra: dict[str, Any],
    *,
    seed: int,
    run_dir: Path,
    pilot: bool = False,
    resume: Path | None = None,
    stop_at: int | None = None,
) -> TrainConfig:
    """The arm's `TrainConfig`: base file, study overrides, scene folders, arm, pilot, then ``extra``."""
    values: dict[str, Any] = dict(study.overrides)
    if study.scenes is not None:
        values |= {"data.source": "disk", "data.disk_root": str(study.scenes.root), "data.mix": {}}
    values |= arm.overrides
    if pilot and study.pilot is not None:
        values |= study.pilot.overrides
    values |= extra
    values |= {"seed": seed, "run_dir": str(run_dir), "resume": str(resume) if resume else None}
    values["stop_at"] = stop_at
    return load_config(study.base, as_overrides(values))
