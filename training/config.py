"""One typed training configuration: YAML file + ``key=value`` overrides.

The whole `TrainConfig` is saved inside every checkpoint, so evaluation and export
rebuild the model from the checkpoint alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scene_contract.model import TASKS
from training.config_checks import DATA_SOURCES as DATA_SOURCES
from training.config_checks import OPTIMIZERS as OPTIMIZERS
from training.config_checks import check_config
from training.config_data import ConfigError as ConfigError
from training.config_data import apply_override, build_dataclass
from training.data.augment import ClassPaste
from training.data.classes import CLASSES
from training.data.pseudo_depth import GroundCamera
from training.model import ModelConfig


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
        paste_classes: CamVid frames only: class names (e.g. ``[pole]``) whose pixels
            are copied from another training frame onto ``paste_probability`` of the
            samples (`training.data.augment.ClassPaste`); empty: no pasting.
        paste_probability: share of CamVid samples that get pasted pixels.
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
    paste_classes: list[str] = field(default_factory=list)
    paste_probability: float = 0.5

    def sources(self) -> dict[str, float]:
        """Source name -> normalised share of each batch (``source`` alone when ``mix`` is empty)."""
        if not self.mix:
            return {self.source: 1.0}
        total = sum(self.mix.values())
        return {name: share / total for name, share in self.mix.items()}

    def crop_size(self) -> tuple[int, int] | None:
        """``crop`` as ``(height, width)``, or ``None``."""
        return None if self.crop is None else (self.crop[0], self.crop[1])

    def class_paste(self) -> ClassPaste | None:
        """``paste_classes`` as a `ClassPaste` of train ids, or ``None`` when empty."""
        if not self.paste_classes:
            return None
        ids = {c.name: c.train_id for c in CLASSES}
        return ClassPaste(tuple(ids[name] for name in self.paste_classes), self.paste_probability)

    def resolved_camvid_root(self) -> str:
        """``camvid_root``, else ``SCENE_CAMVID_ROOT``; `ConfigError` naming both if neither is set."""
        root = self.camvid_root or os.environ.get("SCENE_CAMVID_ROOT")
        if not root:
            raise ConfigError(
                "data.camvid_root: the CamVid source needs its location; set data.camvid_root=PATH "
                "or the SCENE_CAMVID_ROOT environment variable"
            )
        return root


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
        check_config(self)


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
