"""Checkpoints: everything to resume a run, or to rebuild its model from the file alone.

Each task's s = log σ² is stored once, in the loss weighting's state (learned
parameters, or the weights it restates); `weighting_from_checkpoint` rebuilds the
strategy to read it.

Files are written atomically (temporary file, then rename), so an interrupted save
never leaves a truncated checkpoint where a good one was. They are read with
``torch.load(weights_only=True)``, which never unpickles arbitrary code: a
checkpoint holds only tensors and plain Python data.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import ConfigError, TrainConfig, from_dict, to_dict
from training.model import SceneNetwork, build_model
from training.weighting import LossWeighting, build_weighting_from_config

FORMAT = "scene-mtl/checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, or not a scene-mtl checkpoint."""


def save_checkpoint(
    path: Path,
    *,
    config: TrainConfig,
    step: int,
    model: nn.Module,
    weighting: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    metrics: dict[str, Any] | None = None,
    earlier_stages: list[dict[str, Any]] | None = None,
    calibration: dict[str, Any] | None = None,
) -> None:
    """Write everything to resume the run; ``earlier_stages`` is its history (`stages_before`),
    ``calibration`` the semantic offsets fitted after training (`training.calibrate`)."""
    state: dict[str, Any] = {
        "format": FORMAT,
        "config": to_dict(config),
        "step": step,
        "model": model.state_dict(),
        "weighting": weighting.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": {"torch": torch.get_rng_state()},
        "metrics": metrics or {},
        "earlier_stages": earlier_stages or [],
        "calibration": calibration,
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint; one `CheckpointError` says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read: it is truncated, or not a file saved by scene-train "
            f"({first_line})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path} is not a scene-mtl checkpoint (format {found!r})")
    raw_config = state.get("config")
    if isinstance(raw_config, dict) and isinstance(raw_config.get("model"), dict):
        # The checkpoint already holds every weight; the file the backbone started from
        # may not exist where the checkpoint is read.
        raw_config["model"]["backbone_weights"] = None
    try:
        state["config"] = from_dict(state["config"])
    except ConfigError as error:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {error}") from None
    return state


def model_from_checkpoint(path: str | Path) -> tuple[SceneNetwork, dict[str, Any]]:
    """The trained model in eval mode, and the checkpoint's other contents."""
    state = load_checkpoint(path)
    config: TrainConfig = state["config"]
    model_config = config.model
    model = build_model(model_config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path}: its weights do not fit its model ({first_line})") from None
    model.eval()
    return model, state


def weighting_from_checkpoint(state: dict[str, Any]) -> LossWeighting:
    """The run's loss weighting as it was saved (``state`` from `load_checkpoint`).

    Its ``log_variance()`` are the checkpoint's s_i; ``learned`` says whether training
    learned them.
    """
    weighting = build_weighting_from_config(state["config"].loss)
    try:
        weighting.load_state_dict(state["weighting"])
    except (RuntimeError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"the checkpoint's loss weighting does not fit its config ({first_line})"
        ) from None
    return weighting


def start_from(path: str | Path, model: nn.Module, weighting: nn.Module, config: TrainConfig) -> list[str]:
    """Begin a run at the weights of the checkpoint at ``path`` (``init_from``).

    Every model tensor whose name and shape the checkpoint shares is taken from it;
    the others (a decoder built to another stride, a new output layer) stay as ``model``
    was built, and their names are returned. The loss weighting's state (each task's
    s) is taken whole, so the tasks start at the balance the earlier run reached. When
    the checkpoint's ``model.offset_scale`` differs from ``config``'s, the instance
    output layer it contributes is rescaled so the offsets in pixels are unchanged.
    The optimiser and the step are not taken: the run has its own schedule.
    """
    saved = load_checkpoint(path)
    other: TrainConfig = saved["config"]
    if other.model.backbone != config.model.backbone:
        raise CheckpointError(
            f"init_from: {path} holds a model with backbone {other.model.backbone}, this config "
            f"builds {config.model.backbone}"
        )
    own = model.state_dict()
    taken = {k: v for k, v in saved["model"].items() if k in own and own[k].shape == v.shape}
    ratio = other.model.offset_scale / config.model.offset_scale
    if ratio != 1.0:
        for key in _instance_output_keys(model):
            if key in taken:
                taken[key] = taken[key] * ratio
    model.load_state_dict(taken, strict=False)
    try:
        weighting.load_state_dict(saved["weighting"])
    except (RuntimeError, KeyError) as error:
        raise CheckpointError(
            f"init_from: {path} was trained with strategy {other.loss.strategy} and tasks "
            f"{other.loss.tasks}, this config has {config.loss.strategy} and {config.loss.tasks} "
            f"({str(error).strip().splitlines()[0]})"
        ) from None
    return sorted(set(own) - set(taken))


def _instance_output_keys(model: nn.Module) -> list[str]:
    """State-dict names of the layer whose outputs are the instance offsets."""
    decoder = getattr(model, "instance_decoder", None)
    layer: nn.Module = decoder.classifier if decoder is not None else model.instance_head[-1]  # type: ignore[index,assignment]
    prefix = next(name for name, module in model.named_modules() if module is layer)
    return [f"{prefix}.{name}" for name, _ in layer.named_parameters()]


def config_sha256(config: TrainConfig) -> str:
    """sha256 of the configuration's JSON (keys sorted): what the model card records.

    The config as this code reads it: a setting added since the run (e.g.
    ``model.aspp_dropout``) is in it at its default, so a later scene-mtl may hash the
    same run's config differently from the hash recorded when it was written.
    """
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()


def stages_before(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs the checkpoint ``state``'s run started from (``init_from``), earliest first.

    Each is ``{"checkpoint", "steps", "config_sha256", "data_mix"}``, the checkpoint
    being the path the next run's config named. Checkpoints record their history when
    they are written; for one written before they did, the ``init_from`` chain is
    followed on disk, and a checkpoint no longer there ends it with a stage whose
    steps, config and data mix are unknown (``None``).
    """
    if "earlier_stages" in state:
        return [dict(stage) for stage in state["earlier_stages"]]
    path = state["config"].init_from
    if not path:
        return []
    try:
        parent = load_checkpoint(path)
    except CheckpointError:
        return [{"checkpoint": path, "steps": None, "config_sha256": None, "data_mix": None}]
    return [*stages_before(parent), stage_record(parent, path)]


def stage_record(state: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The history entry for the run whose checkpoint ``state`` was read from ``path``."""
    config: TrainConfig = state["config"]
    return {
        "checkpoint": str(path),
        "steps": state.get("step"),
        "config_sha256": config_sha256(config),
        "data_mix": config.data.sources(),
    }
