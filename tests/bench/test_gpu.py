"""bench/gpu.sh keeps working: its dry run does every step on the CPU and writes one results file."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_script_dry_run_writes_results_for_every_step(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        ["bash", str(REPO / "bench/gpu.sh"), "--dry-run"],
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
    assert set(results["models"]) == {"fp32", "fp16"}
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
