"""Reading a study file: YAML into `StudyConfig`, every key checked, the first bad one named."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from scene_contract.model import TASKS
from training.config import ConfigError
from training.data.procedural import SPLITS
from training.data.sample import DataConfigError
from training.study.config import (
    TASK_METRICS,
    Arm,
    Comparison,
    Evaluation,
    FromLearned,
    Grid,
    Pilot,
    Scenes,
    StudyConfig,
    StudyConfigError,
    Widen,
    training_config,
)
from training.study.derive import MODES


def load_study(path: str | Path) -> StudyConfig:
    """Read and check a study config; `StudyConfigError` names the first bad key.

    ``base`` is relative to the study file; ``out`` and ``scenes.root`` to the working
    directory, like scene-train's ``run_dir``. Every arm's training config is built
    here once, so a bad override stops the study before any training.
    """
    path = Path(path)
    top = ("base", "overrides", "out", "seeds", "chunk_steps", "evaluation", "arms", "comparisons")
    data = _mapping(_read_yaml(path), "study", (*top, "pilot", "scenes"), ("base", "out", "seeds", "arms"))
    base = path.parent / str(data["base"])
    if not base.is_file():
        raise StudyConfigError(f"base: {base} not found")
    evaluation = _evaluation(data.get("evaluation", {}))
    arms = _arms(data["arms"])
    comparisons = _comparisons(data.get("comparisons") or [], arms)
    pilot = _pilot(data["pilot"], arms) if data.get("pilot") is not None else None
    scenes = _scenes(data["scenes"]) if data.get("scenes") is not None else None
    study = StudyConfig(
        path=path,
        base=base,
        overrides=_overrides(data.get("overrides"), "overrides"),
        out=Path(str(data["out"])),
        seeds=_seeds(data["seeds"], "seeds"),
        chunk_steps=_int(data.get("chunk_steps", 250), "chunk_steps", 1),
        evaluation=evaluation,
        arms=arms,
        comparisons=comparisons,
        pilot=pilot,
        scenes=scenes,
    )
    for arm in arms:
        _check_arm(study, arm)
    return study


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise StudyConfigError(f"--config: {path} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise StudyConfigError(f"--config: {path} is not valid YAML: {error}") from None


# ---------------------------------------------------------------- values


def _mapping(value: Any, key: str, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StudyConfigError(f"{key}: expected a mapping, got {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise StudyConfigError(f"{key}.{unknown[0]}: unknown key; valid keys here: {', '.join(allowed)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise StudyConfigError(f"{key}.{missing[0]}: required")
    return value


def _int(value: Any, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StudyConfigError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise StudyConfigError(f"{key}: expected a number >= 0, got {value!r}")
    return float(value)


def _seeds(value: Any, key: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise StudyConfigError(f"{key}: expected a non-empty list of seeds, got {value!r}")
    seeds = [_int(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if len(set(seeds)) != len(seeds):
        raise StudyConfigError(f"{key}: duplicate seeds in {seeds}")
    return seeds


def _overrides(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise StudyConfigError(f"{key}: expected a mapping of dotted training keys to values, got {value!r}")
    return dict(value)


# ---------------------------------------------------------------- sections


def _evaluation(value: Any) -> Evaluation:
    data = _mapping(value, "evaluation", ("split", "seed", "count", "batch_size"))
    evaluation = Evaluation(
        split=str(data.get("split", "test")),
        seed=_int(data.get("seed", 1000), "evaluation.seed"),
        count=_int(data.get("count", 500), "evaluation.count", 1),
        batch_size=_int(data.get("batch_size", 16), "evaluation.batch_size", 1),
    )
    if evaluation.split not in SPLITS:
        raise StudyConfigError(
            f"evaluation.split: expected one of {', '.join(SPLITS)}, got {evaluation.split!r}"
        )
    return evaluation


def _grid(value: Any, key: str) -> Grid:
    allowed = ("weights", "seed", "seeds", "select", "normalise", "widen")
    data = _mapping(value, key, allowed, ("weights",))
    weights = _mapping(data["weights"], f"{key}.weights", TASKS)
    if not weights:
        raise StudyConfigError(f"{key}.weights: give each task's list of weights")
    parsed: dict[str, list[float]] = {}
    for task, values in weights.items():
        if not isinstance(values, list) or not values:
            raise StudyConfigError(f"{key}.weights.{task}: expected a non-empty list, got {values!r}")
        parsed[task] = [_number(v, f"{key}.weights.{task}[{i}]") for i, v in enumerate(values)]
    select = data.get("select", "mean_rank")
    metrics = [m for m, _, _ in TASK_METRICS.values()]
    if select != "mean_rank" and select not in metrics:
        raise StudyConfigError(
            f"{key}.select: expected mean_rank or one of {', '.join(metrics)}, got {select!r}"
        )
    normalise = data.get("normalise", True)
    if not isinstance(normalise, bool):
        raise StudyConfigError(f"{key}.normalise: expected true or false, got {normalise!r}")
    if any(sum(values) == 0 for values in product(*parsed.values())):
        raise StudyConfigError(f"{key}.weights: a combination has every weight 0")
    widen = None
    if "widen" in data:
        widen = _widen(data["widen"], f"{key}.widen", len(Grid(parsed, (0,), normalise=normalise).points()))
    return Grid(parsed, _grid_seeds(data, key), select, normalise, widen)


def _grid_seeds(data: dict[str, Any], key: str) -> tuple[int, ...]:
    """``seed: 1`` (one seed) or ``seeds: [1, 2]``, not both."""
    if ("seed" in data) == ("seeds" in data):
        raise StudyConfigError(f"{key}: give seed (one) or seeds (a list), not both or neither")
    if "seed" in data:
        return (_int(data["seed"], f"{key}.seed"),)
    return tuple(_seeds(data["seeds"], f"{key}.seeds"))


def _widen(value: Any, key: str, configured: int) -> Widen:
    data = _mapping(value if value is not None else {}, key, ("factor", "max_points"))
    factor = _number(data.get("factor", 10.0), f"{key}.factor")
    if factor <= 1:
        raise StudyConfigError(f"{key}.factor: must be above 1, got {factor!r}")
    max_points = _int(data.get("max_points", 12), f"{key}.max_points", 1)
    if max_points < configured:
        raise StudyConfigError(f"{key}.max_points: {max_points} is below the grid's {configured} points")
    return Widen(factor, max_points)


def _from_learned(value: Any, key: str) -> FromLearned:
    data = _mapping(value, key, ("arm", "weights"), ("arm", "weights"))
    if data["weights"] not in MODES:
        raise StudyConfigError(f"{key}.weights: expected one of {', '.join(MODES)}, got {data['weights']!r}")
    return FromLearned(str(data["arm"]), data["weights"])


def _arm(value: Any, key: str) -> Arm:
    allowed = ("name", "overrides", "grid", "best_of", "total_weight", "from_learned", "seeds")
    data = _mapping(value, key, allowed, ("name",))
    name = data["name"]
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise StudyConfigError(
            f"{key}.name: expected a folder-safe name (letters, digits, _ -), got {name!r}"
        )
    if "grid" in data and "best_of" in data:
        raise StudyConfigError(f"{key}: an arm has either grid or best_of, not both")
    total = data.get("total_weight")
    if total is not None and not isinstance(total, str):
        total = _number(total, f"{key}.total_weight")
        if total == 0:
            raise StudyConfigError(f"{key}.total_weight: must be positive")
    if "from_learned" in data and ("total_weight" in data or "grid" in data):
        raise StudyConfigError(f"{key}.from_learned: not with total_weight or grid")
    if "seeds" in data and "grid" in data:
        raise StudyConfigError(f"{key}.seeds: a grid arm takes its seeds in grid.seeds")
    return Arm(
        name=name,
        overrides=_overrides(data.get("overrides"), f"{key}.overrides"),
        grid=_grid(data["grid"], f"{key}.grid") if "grid" in data else None,
        best_of=data.get("best_of"),
        total_weight=total,
        from_learned=_from_learned(data["from_learned"], f"{key}.from_learned")
        if "from_learned" in data
        else None,
        seeds=_seeds(data["seeds"], f"{key}.seeds") if "seeds" in data else None,
    )


def _arms(value: Any) -> list[Arm]:
    """Every arm, with unique names, and ``best_of`` and ``total_weight`` naming arms that exist."""
    if not isinstance(value, list) or not value:
        raise StudyConfigError("arms: expected a non-empty list of arms")
    arms = [_arm(a, f"arms[{i}]") for i, a in enumerate(value)]
    names = [a.name for a in arms]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise StudyConfigError(f"arms: two arms are named {duplicate!r}")
    grids = [a.name for a in arms if a.grid is not None]
    for arm in arms:
        if arm.best_of is not None and arm.best_of not in grids:
            raise StudyConfigError(
                f"arms.{arm.name}.best_of: {arm.best_of!r} is not a grid arm "
                f"(grid arms: {', '.join(grids) or 'none'})"
            )
        if isinstance(arm.total_weight, str) and (
            arm.total_weight not in names or arm.total_weight == arm.name
        ):
            raise StudyConfigError(f"arms.{arm.name}.total_weight: {arm.total_weight!r} is not another arm")
        source = arm.from_learned.arm if arm.from_learned else None
        if source is not None and (source not in names or source == arm.name or source in grids):
            raise StudyConfigError(
                f"arms.{arm.name}.from_learned.arm: {source!r} is not another (non-grid) arm"
            )
    return arms


def _comparisons(items: Any, arms: list[Arm]) -> list[Comparison]:
    """Each comparison between two arms that train over seeds (grid arms train one seed)."""
    names = [a.name for a in arms]
    grids = [a.name for a in arms if a.grid is not None]
    comparisons = []
    for i, item in enumerate(items):
        key = f"comparisons[{i}]"
        entry = _mapping(
            item, key, ("arm", "reference", "miou_points", "relative_error"), ("arm", "reference")
        )
        for role in ("arm", "reference"):
            if entry[role] not in names or entry[role] in grids:
                raise StudyConfigError(f"{key}.{role}: {entry[role]!r} is not a (non-grid) arm")
        comparisons.append(
            Comparison(
                entry["arm"],
                entry["reference"],
                _number(entry.get("miou_points", 1.5), f"{key}.miou_points"),
                _number(entry.get("relative_error", 0.05), f"{key}.relative_error"),
            )
        )
    return comparisons


def _pilot(value: Any, arms: list[Arm]) -> Pilot:
    """The pilot section; its arms must be plain ones, which train without other runs' results."""
    pilot_keys = ("arms", "seeds", "overrides", "miou_std_limit", "seeds_if_over")
    entry = _mapping(value, "pilot", pilot_keys, ("arms", "seeds", "seeds_if_over"))
    if not isinstance(entry["arms"], list) or not entry["arms"]:
        raise StudyConfigError("pilot.arms: expected a non-empty list of arm names")
    for name in entry["arms"]:
        found = next((a for a in arms if a.name == name), None)
        if found is None or found.grid or found.best_of or found.sources():
            raise StudyConfigError(
                f"pilot.arms: {name!r} is not a plain arm (no grid, best_of or arm reference)"
            )
    return Pilot(
        arms=list(entry["arms"]),
        seeds=_seeds(entry["seeds"], "pilot.seeds"),
        overrides=_overrides(entry.get("overrides"), "pilot.overrides"),
        miou_std_limit=_number(entry.get("miou_std_limit", 1.0), "pilot.miou_std_limit"),
        seeds_if_over=_seeds(entry["seeds_if_over"], "pilot.seeds_if_over"),
    )


def _scenes(value: Any) -> Scenes:
    entry = _mapping(value, "scenes", ("root", "train", "val", "seed", "workers"), ("root", "train", "val"))
    return Scenes(
        root=Path(str(entry["root"])),
        train=_int(entry["train"], "scenes.train", 1),
        val=_int(entry["val"], "scenes.val", 1),
        seed=_int(entry.get("seed", 0), "scenes.seed"),
        workers=_int(entry.get("workers", 1), "scenes.workers", 1),
    )


def _check_arm(study: StudyConfig, arm: Arm) -> None:
    """Build the arm's training config (with stand-in weights where they come from results)."""
    points = arm.grid.points() if arm.grid else [None]
    for point in points:
        extra = {"loss.strategy": "fixed", "loss.weights": point} if point else {}
        if arm.best_of or arm.from_learned:
            extra = {"loss.strategy": "fixed", "loss.weights": {t: 1.0 for t in TASKS}}
        try:
            config = training_config(study, arm, extra, seed=study.seeds[0], run_dir=study.out / arm.name)
            own = training_config(study, arm, {}, seed=study.seeds[0], run_dir=study.out / arm.name)
        except (ConfigError, DataConfigError) as error:
            raise StudyConfigError(f"arms.{arm.name}: {error}") from None
        if arm.total_weight is not None and config.loss.strategy != "fixed":
            raise StudyConfigError(f"arms.{arm.name}.total_weight: needs fixed weights (loss.strategy=fixed)")
    if arm.from_learned is not None:
        _check_from_learned(study, arm, own.loss.strategy)
    possible = set(study.seeds) | set(study.pilot.seeds_if_over if study.pilot else [])
    if arm.seeds is not None and not set(arm.seeds) <= possible:
        raise StudyConfigError(f"arms.{arm.name}.seeds: {arm.seeds} are not all among the study's seeds")


def _check_from_learned(study: StudyConfig, arm: Arm, own_strategy: str) -> None:
    """The source learns its weights and trains every seed of ``arm``; a base to derive from is fixed."""
    assert arm.from_learned is not None
    key = f"arms.{arm.name}.from_learned"
    source = study.arm(arm.from_learned.arm)
    strategy = training_config(study, source, {}, seed=study.seeds[0], run_dir=study.out).loss.strategy
    if strategy == "fixed":
        raise StudyConfigError(f"{key}.arm: {source.name!r} has fixed weights; name a learned-weight arm")
    needs_base = arm.from_learned.weights != "end_point" and arm.best_of is None
    if needs_base and own_strategy != "fixed":
        raise StudyConfigError(
            f"{key}.weights: {arm.from_learned.weights} needs the arm's own fixed weights "
            "(loss.strategy=fixed and loss.weights, or best_of)"
        )
    missing = sorted(set(arm.seeds or study.seeds) - set(source.seeds or study.seeds))
    if missing:
        raise StudyConfigError(
            f"{key}.arm: {source.name!r} does not train seeds {missing} that this arm needs"
        )
