"""One typed training configuration: YAML file + ``key=value`` overrides.

The whole `TrainConfig` is saved inside every checkpoint, so evaluation and export
rebuild the model from the checkpoint alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scene_contract.model import TASKS
from training.class_weights import CLASS_WEIGHTINGS
from training.config_data import ConfigError as ConfigError
from training.config_data import apply_override, build_dataclass
from training.data.pseudo_depth import GroundCamera
from training.espnetv2 import WIDTHS
from training.model import BACKBONE_NAMES, ESPNETV2, ModelConfig

DATA_SOURCES: tuple[str, ...] = ("procedural", "camvid", "cityscapes", "disk")


@dataclass
class PseudoDepthConfig:
    """Geometric pseudo-depth for real frames without depth (`training.data.pseudo_depth`).

    Attributes:
        enabled: give CamVid frames the pseudo-depth of their labels as depth targets.
        horizon, focal_ratio, camera_height_m: the assumed camera (`GroundCamera`):
            horizon row as a fraction of the height, focal length over the width, metres.
    """

    enabled: bool = False
    horizon: float = 0.49
    focal_ratio: float = 0.8
    camera_height_m: float = 1.3

    def camera(self) -> GroundCamera | None:
        if not self.enabled:
            return None
        return GroundCamera(horizon=self.horizon, focal_ratio=self.focal_ratio, height_m=self.camera_height_m)


@dataclass
class DataConfig:
    """Where training images come from.

    Attributes:
        source: ``"procedural"`` (rendered on the fly), ``"camvid"``, ``"cityscapes"`` or
            ``"disk"`` (procedural scenes rendered once by ``scene-data render``); the only
            source when ``mix`` is empty, else the one validated on.
        mix: several sources at once, source name -> its share of every batch, e.g.
            ``{procedural: 0.5, camvid: 0.5}``; shares are normalised and turned into
            a fixed number of samples per batch. Empty: ``source`` alone.
        root: Cityscapes root directory (source ``cityscapes`` only).
        disk_root: source ``disk``: a folder holding ``train/`` and ``val/``, each a
            ``scene-data render --out`` folder at the training size; every scene in it
            is used (``train_count`` and ``val_count`` do not apply).
        camvid_root: CamVid root (the SegNet layout: ``train.txt``, ``train/``,
            ``trainannot/``, ...); ``null`` reads ``SCENE_CAMVID_ROOT``.
        height, width: training resolution (paper: 128 x 256, "Tiny Cityscapes").
        seed: procedural dataset seed; the validation split uses the same seed's
            ``val`` stream, so it never shares a scene with training.
        train_count: procedural scenes per pass over the training set.
        val_count: procedural validation scenes.
        hflip: random horizontal flips (paper: yes).
        scale_range: real frames only: random scale ``[low, high]`` relative to the
            training size before a random crop (see `training.data.augment`).
        color_jitter: real frames only: brightness/contrast/saturation jitter.
        workers: DataLoader worker processes.
        pseudo_depth: depth targets for CamVid frames (`PseudoDepthConfig`).
        crop: train on random ``[height, width]`` windows of each sample at the
            training size (fewer pixels a step; the network is fully convolutional);
            ``null``: whole samples. Evaluation always sees the whole training size.
    """

    source: str = "procedural"
    mix: dict[str, float] = field(default_factory=dict)
    root: str | None = None
    disk_root: str | None = None
    camvid_root: str | None = None
    height: int = 128
    width: int = 256
    seed: int = 0
    train_count: int = 20000
    val_count: int = 200
    hflip: bool = True
    scale_range: list[float] = field(default_factory=lambda: [0.75, 1.75])
    color_jitter: float = 0.3
    workers: int = 2
    pseudo_depth: PseudoDepthConfig = field(default_factory=PseudoDepthConfig)
    crop: list[int] | None = None

    def sources(self) -> dict[str, float]:
        """Source name -> normalised share of each batch (``source`` alone when ``mix`` is empty)."""
        if not self.mix:
            return {self.source: 1.0}
        total = sum(self.mix.values())
        return {name: share / total for name, share in self.mix.items()}

    def crop_size(self) -> tuple[int, int] | None:
        """``crop`` as ``(height, width)``, or ``None``."""
        return None if self.crop is None else (self.crop[0], self.crop[1])

    def resolved_camvid_root(self) -> str:
        """``camvid_root``, else ``SCENE_CAMVID_ROOT``; `ConfigError` naming both if neither is set."""
        root = self.camvid_root or os.environ.get("SCENE_CAMVID_ROOT")
        if not root:
            raise ConfigError(
                "data.camvid_root: the CamVid source needs its location; set data.camvid_root=PATH "
                "or the SCENE_CAMVID_ROOT environment variable"
            )
        return root


OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


@dataclass
class OptimConfig:
    """SGD with Nesterov momentum and poly learning-rate decay (paper defaults), or Adam.

    ``name``: ``sgd`` (the paper's) or ``adam``. Under SGD a constant factor on the
    loss is a factor on the step, so the sum of the task weights acts as a learning
    rate; Adam divides each step by the gradient's running scale and cancels it, which
    makes it the study's rate control. ``adam`` is Adam with decoupled weight decay
    (AdamW): decay added to the gradient would be scaled down with the loss weights and
    undo the cancellation. ``lr`` is used as given (Adam's customary rate is 1e-3, not
    SGD's 2.5e-3 default); ``momentum`` and ``nesterov`` are SGD's only.

    ``log_variance_lr`` is the learning rate of the loss weighting's learned
    parameters (the uncertainty strategies' s_i); ``None`` means ``lr``. Those
    parameters never get weight decay.

    ``grad_clip_norm`` clips the network's gradient norm only. The s_i have their own
    bound, ``log_variance_grad_clip``: each s_i's gradient is clamped to ``[-g, g]``
    (``None``: unbounded). Normal steps stay well inside it (near equilibrium the
    gradient is about 0, and it is +1/2 at most); it stops one batch whose loss spikes
    (``-c_i·exp(-s_i)·L_i`` in the thousands) from throwing σ_i up by orders of magnitude.
    """

    name: str = "sgd"
    lr: float = 2.5e-3
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    log_variance_lr: float | None = None
    grad_clip_norm: float | None = None
    log_variance_grad_clip: float | None = None


@dataclass
class LossConfig:
    """Task loss weighting; see `training.weighting` for the strategies.

    Attributes:
        strategy: ``uncertainty`` (paper), ``fixed``, ``uncertainty_log1p`` or ``dwa``.
        tasks: tasks that take part (for ``uncertainty``, ``uncertainty_log1p``, ``dwa``).
        init_log_variance: initial s_i = log σ_i² of the uncertainty strategies.
        weights: per-task weights of ``fixed``; zero turns a task off.
        dwa_temperature, dwa_window: DWA's temperature and averaging window in steps.
        class_weighting: per-class weights of the semantic loss, one of
            `training.class_weights.CLASS_WEIGHTINGS`, counted over the CamVid training
            frames (so it needs CamVid in the mix); ``none``: unweighted.
    """

    strategy: str = "uncertainty"
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    init_log_variance: float = 0.0
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TASKS, 1 / len(TASKS)))
    dwa_temperature: float = 2.0
    dwa_window: int = 50
    class_weighting: str = "none"


@dataclass
class TrainConfig:
    """Everything a training run needs; ``scene-train --config FILE key=value ...``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int = 50000
    batch_size: int = 8
    seed: int = 0
    run_dir: str = "runs/default"
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: bool = False
    device: str = "auto"
    amp: bool = True
    resume: str | None = None
    # Start from this checkpoint's model and loss-weighting state, with a fresh
    # optimiser and schedule (`training.checkpoint.start_from`); ``resume`` wins.
    init_from: str | None = None
    # End this invocation after this step (checkpoint saved, no final evaluation) while
    # keeping the learning-rate schedule of `steps`; `resume` later goes on from there.
    stop_at: int | None = None
    # End this invocation, the same way, once this many minutes of training have passed
    # (a lent GPU's time slot, a CPU chunk); null: no limit.
    max_minutes: float | None = None

    def validate(self) -> None:
        """Check every section; the first `ConfigError` names its key."""
        _check_run(self)
        _check_model(self.model)
        _check_data(self.data, self.batch_size)
        _check_loss(self.loss, self.data.sources())
        _check_optim(self.optim)


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


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(config)


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a `TrainConfig` from plain data, checking every key and type."""
    config = build_dataclass(TrainConfig, data, "")
    assert isinstance(config, TrainConfig)
    config.validate()
    return config


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML file (or start from defaults when ``path`` is None) and apply ``key=value`` overrides.

    A mapping in the file replaces the default mapping (``loss.weights: {semantic: 1}``
    means semantic only); a dotted override changes one entry of whatever is there
    (``loss.weights.depth=0.2`` keeps the other weights).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--config: {path} not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"--config: {path} is not valid YAML: {error}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"--config: {path} must hold a mapping at the top level")
        data = loaded or {}
    # Start overrides from the complete config, so a dotted key into a mapping edits one entry.
    data = to_dict(build_dataclass(TrainConfig, data, ""))
    for override in overrides:
        apply_override(data, override)
    return from_dict(data)
