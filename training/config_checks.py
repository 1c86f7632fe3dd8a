"""Validation of a `training.config.TrainConfig`: each section's rules, and the message
naming the key that breaks one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from training.class_weights import CLASS_WEIGHTINGS
from training.config_data import ConfigError
from training.data.classes import CLASSES
from training.espnetv2 import WIDTHS
from training.model import BACKBONE_NAMES, ESPNETV2, ModelConfig

if TYPE_CHECKING:
    from training.config import DataConfig, LossConfig, OptimConfig, TrainConfig

DATA_SOURCES: tuple[str, ...] = ("procedural", "camvid", "cityscapes", "disk")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


def check_config(config: TrainConfig) -> None:
    """Check every section; the first `ConfigError` names its key."""
    _check_run(config)
    _check_model(config.model)
    _check_data(config.data, config.batch_size)
    _check_loss(config.loss, config.data.sources())
    _check_optim(config.optim)


def _require_positive(values: dict[str, float]) -> None:
    """Refuse the first of ``values`` (dotted key → value) that is not above zero."""
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")


def _check_run(config: TrainConfig) -> None:
    """The top-level keys: counts, schedule, stopping points and device."""
    _require_positive(
        {
            "steps": config.steps,
            "batch_size": config.batch_size,
            "log_every": config.log_every,
        }
    )
    for key, value in {"eval_every": config.eval_every, "checkpoint_every": config.checkpoint_every}.items():
        if value < 0:
            raise ConfigError(f"{key}: must be >= 0 (0 = never), got {value}")
    if config.max_minutes is not None and config.max_minutes <= 0:
        raise ConfigError(f"max_minutes: must be positive or null, got {config.max_minutes}")
    if config.stop_at is not None and not 0 < config.stop_at <= config.steps:
        raise ConfigError(f"stop_at: must be between 1 and steps={config.steps}, got {config.stop_at}")
    if config.device not in ("auto", "cpu") and not config.device.startswith("cuda"):
        raise ConfigError(f"device: expected auto, cpu or cuda[:N], got {config.device!r}")


def _check_model(model: ModelConfig) -> None:
    _require_positive(
        {
            "model.aspp_channels": model.aspp_channels,
            "model.decoder_channels": model.decoder_channels,
        }
    )
    if model.backbone not in BACKBONE_NAMES:
        raise ConfigError(
            f"model.backbone: unknown backbone {model.backbone!r}; valid: {', '.join(BACKBONE_NAMES)}"
        )
    if model.backbone == ESPNETV2 and model.width not in WIDTHS:
        raise ConfigError(f"model.width: ESPNetv2 comes in widths {sorted(WIDTHS)}, got {model.width}")
    for name in ("instance_stride", "depth_stride"):
        if getattr(model, name) not in (4, 8):
            raise ConfigError(f"model.{name}: must be 4 or 8, got {getattr(model, name)}")
    if not 0.0 <= model.aspp_dropout < 1.0:
        raise ConfigError(f"model.aspp_dropout: must be in [0, 1), got {model.aspp_dropout}")
    if not (math.isfinite(model.offset_scale) and model.offset_scale > 0):
        raise ConfigError(f"model.offset_scale: must be positive, got {model.offset_scale}")
    if model.backbone_weights and not Path(model.backbone_weights).is_file():
        raise ConfigError(f"model.backbone_weights: {model.backbone_weights} not found")


def _check_data(data: DataConfig, batch_size: int) -> None:
    """The sources and their mix first, then sizes and augmentation."""
    _check_sources(data, batch_size)
    _require_positive(
        {
            "data.height": data.height,
            "data.width": data.width,
            "data.train_count": data.train_count,
            "data.val_count": data.val_count,
        }
    )
    if len(data.scale_range) != 2 or not 0 < data.scale_range[0] <= data.scale_range[1]:
        raise ConfigError(
            f"data.scale_range: expected [low, high] with 0 < low <= high, got {data.scale_range}"
        )
    crop = data.crop
    if crop is not None and (
        len(crop) != 2 or not (0 < crop[0] <= data.height and 0 < crop[1] <= data.width)
    ):
        raise ConfigError(
            f"data.crop: expected [height, width] within the training size "
            f"{data.height}x{data.width}, got {crop}"
        )
    depth = data.pseudo_depth
    if not 0 < depth.horizon < 1 or depth.focal_ratio <= 0 or depth.camera_height_m <= 0:
        raise ConfigError(
            "data.pseudo_depth: horizon must lie in (0, 1), focal_ratio and camera_height_m be positive"
        )
    if not 0 <= data.color_jitter < 1:
        raise ConfigError(f"data.color_jitter: must lie in [0, 1), got {data.color_jitter}")
    if data.workers < 0:
        raise ConfigError(f"data.workers: must be >= 0, got {data.workers}")
    _check_paste(data)


def _check_paste(data: DataConfig) -> None:
    if not data.paste_classes:
        return
    names = [c.name for c in CLASSES]
    unknown = [name for name in data.paste_classes if name not in names]
    if unknown:
        raise ConfigError(f"data.paste_classes: unknown classes {unknown}; valid: {', '.join(names)}")
    if "camvid" not in data.sources():
        raise ConfigError("data.paste_classes: pasting works on CamVid frames; add camvid to data.mix")
    if not 0 < data.paste_probability <= 1:
        raise ConfigError(f"data.paste_probability: must lie in (0, 1], got {data.paste_probability}")


def _check_sources(data: DataConfig, batch_size: int) -> None:
    if data.source not in DATA_SOURCES:
        raise ConfigError(f"data.source: unknown source {data.source!r}; valid: {', '.join(DATA_SOURCES)}")
    for name, share in data.mix.items():
        if name not in DATA_SOURCES:
            raise ConfigError(f"data.mix.{name}: unknown source; valid: {', '.join(DATA_SOURCES)}")
        if not (math.isfinite(share) and share > 0):
            raise ConfigError(f"data.mix.{name}: share must be positive, got {share}")
    if data.mix and data.source not in data.mix:
        raise ConfigError(
            f"data.source: {data.source!r} (validated on) must be one of data.mix's sources "
            f"({', '.join(data.mix)})"
        )
    sources = data.sources()
    if "cityscapes" in sources and not data.root:
        raise ConfigError("data.root: required when data.source is cityscapes")
    if "disk" in sources and not data.disk_root:
        raise ConfigError(
            "data.disk_root: required when data.source is disk (a folder with train/ and val/ "
            "written by scene-data render)"
        )
    if len(sources) > 1 and min(sources.values()) * batch_size < 0.5:
        raise ConfigError(
            f"data.mix: batch_size={batch_size} is too small to give every source a sample (shares {sources})"
        )


def _check_loss(loss: LossConfig, sources: dict[str, float]) -> None:
    """``sources``: the data's sources, as the class weights are counted on one of them."""
    if loss.class_weighting not in CLASS_WEIGHTINGS:
        raise ConfigError(
            f"loss.class_weighting: {loss.class_weighting!r} is not one of {', '.join(CLASS_WEIGHTINGS)}"
        )
    if loss.class_weighting != "none" and "camvid" not in sources:
        raise ConfigError("loss.class_weighting: the weights are counted on CamVid; add camvid to data.mix")


def _check_optim(optim: OptimConfig) -> None:
    if optim.lr <= 0:
        raise ConfigError(f"optim.lr: must be positive, got {optim.lr}")
    if optim.name not in OPTIMIZERS:
        raise ConfigError(f"optim.name: unknown optimiser {optim.name!r}; valid: {', '.join(OPTIMIZERS)}")
    optional: dict[str, float | None] = {
        "optim.log_variance_lr": optim.log_variance_lr,
        "optim.grad_clip_norm": optim.grad_clip_norm,
        "optim.log_variance_grad_clip": optim.log_variance_grad_clip,
    }
    for name, rate in optional.items():
        if rate is not None and rate <= 0:
            raise ConfigError(f"{name}: must be positive or null, got {rate}")
