"""bench/gpu_train.sh keeps working: its dry run trains, evaluates and exports on the CPU."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch

from scene_contract.card import ModelCard
from scene_contract.model import METADATA_KEY

REPO = Path(__file__).resolve().parents[2]


def test_gpu_training_dry_run_brings_back_checkpoint_metrics_and_model(
    tmp_path: Path, camvid_root: Path, fake_espnetv2: Callable[[int], dict[str, torch.Tensor]]
) -> None:
    weights = tmp_path / "espnetv2.pth"
    torch.save(fake_espnetv2(0), weights)  # stand-in weights with the published layout
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "CAMVID_ROOT": str(camvid_root),
        "ESPNETV2_WEIGHTS": str(weights),
        "ESPNETV2_SHA256": "null",
        "REALDEPTH_ROOT": str(tmp_path / "absent"),
    }
    done = subprocess.run(
        ["bash", str(REPO / "bench/gpu_train.sh"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    log = (out / "gpu-train.log").read_text()
    assert done.returncode == 0, log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 2 and "camvid_miou" in metrics["camvid"]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    card = ModelCard.from_json(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert (card.version, card.backbone, card.input.fixed_size) == ("3", "espnetv2", True)
    assert (out / "run" / "last.pt").is_file() and (out / "run" / "log.csv").is_file()
