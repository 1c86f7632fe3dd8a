"""bench/gpu.sh keeps working: its dry run does every step on the CPU and writes one results file."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import model_export.export
from bench import gpu
from scene_contract.card import ModelCard
from scene_contract.model import METADATA_KEY

REPO = Path(__file__).resolve().parents[2]


def test_gpu_script_dry_run_writes_results_for_every_step(tmp_path: Path, smoke_export: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    # The session's export stands in for a fresh one (the export itself is tested in
    # tests/model_export; the fresh-export path of the script below).
    done = subprocess.run(
        ["bash", str(REPO / "bench/gpu.sh"), "--dry-run", "--model", str(smoke_export)],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    log = (tmp_path / "gpu-run.log").read_text()
    assert done.returncode == 0, log
    results = json.loads((tmp_path / "gpu-results.json").read_text())
    assert results["dry_run"] is True and results["errors"] == []
    assert results["environment"]["available_providers"]
    assert set(results["models"]) == {"fp32", "fp16"} and results["models"]["fp32"] == str(smoke_export)
    model_rows = results["model"]
    assert {(r["precision"], r["batch"]) for r in model_rows} == {
        ("fp32", 1),
        ("fp32", 2),
        ("fp16", 1),
        ("fp16", 2),
    }
    assert all(r["status"] == "ok" and r["provider_used"] == "CPUExecutionProvider" for r in model_rows)
    assert all(r["ms_per_run"] > 0 for r in model_rows)
    service_rows = results["service"]
    assert {(r["server"], r["clients"]) for r in service_rows} == {
        (server, clients) for server in ("scene-serve", "naive") for clients in (1, 2)
    }
    assert all(r["status"] == "ok" and r["errors"] == 0 for r in service_rows)
    assert "bench/gpu.py exited with 0" in log


def test_a_fresh_export_gets_a_card_the_service_can_load(
    tmp_path: Path, smoke_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = smoke_export.with_name("trace.onnx")  # the bare trace: no card yet

    def copy_the_trace(model: object, path: Path, height: int, width: int) -> None:
        shutil.copyfile(trace, path)

    monkeypatch.setattr(model_export.export, "export_fp32", copy_the_trace)
    paths = gpu.export_models(tmp_path, dry_run=True)
    assert set(paths) == {"fp32", "fp16"}
    for path in paths.values():
        cards = [p.value for p in onnx.load(str(path)).metadata_props if p.key == METADATA_KEY]
        assert len(cards) == 1, path
        card = ModelCard.from_json(cards[0])  # what the service reads at start-up
        assert len(card.classes) == 19 and card.input.height > 0


def test_the_benchmark_hands_onnxruntime_the_services_gpu_options(tmp_path: Path) -> None:
    [(trt, options), (cuda, cuda_options), (cpu, _)] = gpu.provider_options(
        "TensorrtExecutionProvider", "fp16", tmp_path
    )
    assert (trt, cuda, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert options["trt_fp16_enable"] == "True" and options["trt_engine_cache_path"] == str(tmp_path)
    assert cuda_options["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert (
        gpu.provider_options("TensorrtExecutionProvider", "fp32", tmp_path)[0][1]["trt_fp16_enable"]
        == "False"
    )
