"""bench/soak.py's smoke mode: every kind of request gets the answer it should, and none is a 5xx."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_soak_smoke_run_sorts_every_request_correctly(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    command = [sys.executable, "-m", "bench.soak", "--smoke", "--model", str(model_path), "--json", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["unexpected_5xx"] == 0
    assert {outcome.split(" -> ")[1] for outcome in report["outcomes"]} <= {
        "200",
        "400 corrupt_image",
        "413 output_too_large",
        "413 image_too_wide",
        "408 body_timeout",
        "0 hung_up",
    }
    reasons = report["server_errors_by_reason"]
    assert reasons.get("client_disconnected", 0) >= 1 and reasons.get("body_timeout", 0) >= 1
    assert "internal_error" not in reasons
    assert report["rss_peak_mb"] >= report["rss_baseline_mb"] > 0
