"""Fixed weights read from a learned-weight arm's run (``from_learned``), and where they came from.

The learned run with the same seed must have finished in this study: its ``log.csv``
holds its weights and learning rate at every logged step, and `training.rate_matching`
turns them into the end-point weights, the rate-weighted per-task weights, or the k
that gives fixed weights the learned run's Σ_t lr_t · Σ_i w_i(t). A learned run
restored from another machine's ``results.json`` gets its ``log.csv`` back from the
``schedule`` its result carries; one from before results carried it has none, and
its dependents cannot be derived here (the learned arm has to train in this study).
"""

from __future__ import annotations

from typing import Any

from training.rate_matching import (
    ScheduleError,
    end_point_weights,
    rate_matched_scale,
    rate_weighted_weights,
    read_schedule,
)
from training.study.config import Arm, StudyConfig, StudyConfigError
from training.study.folders import WaitingError, read_result

MODES = ("end_point", "rate_weighted", "rate_matched")


def derived_weights(
    study: StudyConfig, arm: Arm, seed: int, base: dict[str, float] | None
) -> tuple[dict[str, float], dict[str, Any]]:
    """The fixed weights of ``arm``'s run with ``seed``, and the record of their derivation.

    ``base``: the arm's own fixed weights (its ``loss.weights``, or its grid's chosen
    ones), which ``rate_weighted`` takes the tasks from and ``rate_matched`` scales.
    Raises `WaitingError` while the learned run is unfinished, `StudyConfigError` when
    it finished without a log to read.
    """
    source = arm.from_learned
    assert source is not None
    run_dir = study.out / source.arm / f"seed{seed}"
    learned = read_result(run_dir)
    if learned is None:
        raise WaitingError(f"{source.arm} seed {seed} is not finished")
    log = run_dir / "log.csv"
    if not log.is_file():
        where = learned.get("restored_from", "elsewhere")
        raise StudyConfigError(
            f"arms.{arm.name}.from_learned: {source.arm} seed {seed} is finished but has no {log} "
            f"(restored from {where}): its weights over training are not in results.json; "
            "train the learned arm in this study"
        )
    try:
        schedule = read_schedule(log)
    except ScheduleError as error:
        raise StudyConfigError(f"arms.{arm.name}.from_learned: {error}") from None
    if schedule.steps[-1] != learned["steps"]:
        raise StudyConfigError(
            f"arms.{arm.name}.from_learned: {log} ends at step {schedule.steps[-1]}, "
            f"the run trained {learned['steps']} steps"
        )
    tasks = list(learned["tasks"])
    record: dict[str, Any] = {"from": str(log), "arm": source.arm, "seed": seed, "mode": source.weights}
    if source.weights == "end_point":
        end = end_point_weights([schedule])
        weights = {t: end[t] for t in tasks}
    elif source.weights == "rate_weighted":
        rated = rate_weighted_weights([schedule])
        weights = {t: rated[t] for t in _weighted(base)}
        record["base_weights"] = base
    else:
        assert base is not None
        k = rate_matched_scale([schedule], base)
        weights = {t: w * k for t, w in base.items()}
        record |= {"base_weights": base, "k": k}
    return weights, record | {"weights": weights}


def _weighted(base: dict[str, float] | None) -> list[str]:
    assert base is not None
    return [task for task, weight in base.items() if weight > 0]
