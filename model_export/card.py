"""The model card written into an exported model's metadata."""

from __future__ import annotations

import hashlib
import json
import math
import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from model_export.contract import CARD_SCHEMA, INPUT_NAME, OUTPUT_NAMES, TASKS
from training.config import TrainConfig, to_dict
from training.data.classes import IGNORE_INDEX, class_table_json
from training.model import SceneModel

OUTPUT_DESCRIPTIONS = {
    "semantic": "uint8 [N, H, W]: train id of the most likely class",
    "semantic_confidence": "float32 [N, H, W]: softmax probability of that class",
    "instance_offsets": "float32 [N, 2, H, W]: pixels, (dy, dx) from each pixel to its instance centroid",
    "inverse_depth": "float32 [N, 1, H, W]: 1/m, 0 = infinitely far (sky)",
}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def build_model_card(
    state: dict[str, Any],
    model: SceneModel,
    *,
    precision: str,
    name: str,
    version: str,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card for a model exported from checkpoint ``state`` (see `training.checkpoint`).

    ``task_uncertainty`` holds each task's σ and s = log σ². For the uncertainty
    strategies these are learned; for the others σ is the equivalent of the task's
    weight, σ = sqrt(c / w) (`training.weighting`), and absent tasks get NaN-free
    placeholders of σ = 1 marked ``"learned": false``.
    """
    config: TrainConfig = state["config"]
    sigma: dict[str, float] = state.get("sigma") or {}
    learned = config.loss.strategy in ("uncertainty", "uncertainty_log1p")
    uncertainty = {}
    for task in TASKS:
        value = sigma.get(task)
        participates = value is not None and math.isfinite(value) and value > 0
        s = value if participates and value is not None else 1.0
        uncertainty[task] = {
            "sigma": s,
            "log_variance": 2.0 * math.log(s),
            "learned": learned and participates,
        }
    config_json = json.dumps(to_dict(config), sort_keys=True)
    checkpoint_metrics = {k: v for k, v in (state.get("metrics") or {}).items() if k != "sigma"}
    return {
        "schema": CARD_SCHEMA,
        "name": name,
        "version": version,
        "backbone": config.model.backbone,
        "precision": precision,
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "layout": "NHWC",
            "color": "RGB",
            "height": config.data.height,
            "width": config.data.width,
            "spatial_multiple": model.output_stride,
            "normalisation": "inside the graph",
        },
        "outputs": {name: OUTPUT_DESCRIPTIONS[name] for name in OUTPUT_NAMES},
        "classes": class_table_json(),
        "ignore_index": IGNORE_INDEX,
        "task_uncertainty": uncertainty,
        "weighting": config.loss.strategy,
        "metrics": metrics if metrics is not None else checkpoint_metrics,
        "training": {
            "steps": state.get("step"),
            "data_source": config.data.source,
            "resolution": [config.data.height, config.data.width],
            "config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
        },
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "scene_mtl": _version("scene-mtl"),
            "torch": _version("torch"),
            "onnx": _version("onnx"),
            "onnxruntime": _version("onnxruntime-gpu")
            if _version("onnxruntime") == "unknown"
            else _version("onnxruntime"),
            "python": platform.python_version(),
        },
    }
