"""scene-serve: argument handling, and a real multi-worker server whose metrics add up."""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.cli import log_config, main


def test_missing_model_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(tmp_path / "absent.onnx")]) == 2
    assert "no model file" in capsys.readouterr().err


def test_workers_must_be_positive(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(model_path), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_service_logs_at_the_chosen_level() -> None:
    assert log_config("debug")["loggers"]["service"]["level"] == "DEBUG"


def test_two_workers_serve_and_report_summed_metrics(
    model_path: Path, tmp_path: Path, running_server: Callable[..., AbstractContextManager[str]]
) -> None:
    metric_dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "scene-prometheus-*")))
    with running_server(
        model_path, tmp_path / "server.log", "--workers", "2", "--log-level", "warning"
    ) as base:
        image = Path(__file__).with_name("conftest.py").read_bytes()  # not an image: a quick 400
        for _ in range(4):
            # A new connection each time, so the kernel may hand them to either worker.
            response = httpx.post(f"{base}/predict", content=image, headers={"Content-Type": "image/png"})
            assert response.status_code == 400
        text = httpx.get(f"{base}/metrics").text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    # Multiprocess mode: only the shared-directory samples, summed over workers.
    assert not any(name.startswith("python_gc") for name, _ in samples)
    assert samples[("scene_errors_total", (("reason", "corrupt_image"),))] == 4
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "scene-prometheus-*"))) == metric_dirs
