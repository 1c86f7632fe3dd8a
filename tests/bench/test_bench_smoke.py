"""Smoke modes of the hardening benches: bench/soak.py sorts every kind of request correctly
with no 5xx; bench/request_memory.py measures what a request costs per pixel."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
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


def test_the_request_memory_smoke_run_measures_per_pixel_costs(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    command = [sys.executable, "-m", "bench.request_memory", "--smoke", "--model", str(model_path)]
    result = subprocess.run(
        [*command, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    rows = {row["accept"]: row for row in json.loads(out.read_text())["results"]}
    assert {row["status"] for row in rows.values()} == {200}
    # npz carries the raw maps: 5 (semantic) + 10 (instances) + 4 (depth) bytes per pixel.
    assert 19 <= rows["npz"]["response_bytes_per_pixel"] < 19.5
    assert rows["npz"]["peak_bytes_per_pixel"] > rows["npz"]["response_bytes_per_pixel"]


def test_a_12_megapixel_photo_stays_within_the_documented_request_memory(
    model_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "photo.json"
    command = [sys.executable, "-m", "bench.request_memory", "--photo", "--model", str(model_path)]
    result = subprocess.run(
        [*command, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    default_budget = 2_097_152
    for row in json.loads(out.read_text())["results"]:
        assert row["status"] == 200 and 0 < row["map_pixels"] <= default_budget
        # docs/serving.md: a request costs at most the output budget × 117 B (JSON with overlays).
        assert row["peak_mb"] * 2**20 <= default_budget * 117 * 1.05, row


def test_the_demo_page_bench_compares_the_page_with_the_plain_request(
    model_path: Path, tmp_path: Path, system_tool: Callable[[str, str], str]
) -> None:
    system_tool("chromium", "chromium")
    out = tmp_path / "demo.json"
    command = [sys.executable, "-m", "bench.demo_page", "--model", str(model_path), "--runs", "1"]
    result = subprocess.run(
        [*command, "--size", "640x480", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    [photo] = json.loads(out.read_text())["results"].values()
    # The page uploads the photo scaled down, so its answer is smaller than the plain one's.
    assert photo["demo"]["upload_bytes"] < photo["plain"]["upload_bytes"]
    assert photo["demo"]["bytes_vs_plain"] < 1 < photo["overlay"]["bytes_vs_plain"]
