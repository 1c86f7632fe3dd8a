"""scene-serve: argument handling, and a real multi-worker server whose metrics add up."""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.cli import STARTUP_FAILURE, default_text, describe_settings, main
from service.logs import log_config
from service.metrics import MULTIPROC_ENV
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_missing_model_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(tmp_path / "absent.onnx")]) == 2
    assert "no model file" in capsys.readouterr().err


def test_workers_must_be_positive(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(model_path), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_optics_without_scikit_learn_stops_the_start_naming_the_extra(
    model_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if not installed
    monkeypatch.setenv("SCENE_INSTANCE_METHOD", "optics")
    assert main(["--model", str(model_path)]) == 2
    assert "scene-mtl[optics]" in capsys.readouterr().err


def test_service_logs_at_the_chosen_level() -> None:
    assert log_config("debug")["loggers"]["service"]["level"] == "DEBUG"


def test_two_workers_serve_and_report_summed_metrics(
    model_path: Path, tmp_path: Path, running_server: Callable[..., AbstractContextManager[str]]
) -> None:
    metric_dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "scene-prometheus-*")))
    slot_dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "scene-serve-workers-*")))
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
    # The workers' slot folder (their GPU numbers) goes too.
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "scene-serve-workers-*"))) == slot_dirs


def test_keep_alive_outlasts_load_balancer_idle_timeouts(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    started: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.update(kwargs))
    for name in ("SCENE_MODEL_PATH", "SCENE_HOST", "SCENE_PORT", "SCENE_LOG_LEVEL"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # main writes them; restored afterwards
        monkeypatch.delenv(name)
    assert main(["--model", str(model_path)]) == 0
    # uvicorn's own default is 5 s; AWS ALB and nginx keep idle connections 60 s.
    assert started["timeout_keep_alive"] == 75
    monkeypatch.setenv("SCENE_KEEP_ALIVE_TIMEOUT_S", "620")
    assert main(["--model", str(model_path)]) == 0
    assert started["timeout_keep_alive"] == 620


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_model_that_cannot_load_fails_the_start_whatever_the_workers(tmp_path: Path, workers: str) -> None:
    # With two workers the start used to exit 0 while each worker failed: a supervisor saw nothing.
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model " * 100)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {key: value for key, value in os.environ.items() if key != MULTIPROC_ENV}
    environment |= {"SCENE_WORKERS": workers, "SCENE_PROVIDERS": "CPUExecutionProvider"}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "--model", str(corrupt), "--port", str(port)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == STARTUP_FAILURE, result.stderr
    assert f"onnxruntime cannot load {corrupt}" in result.stderr


def test_help_lists_every_setting_with_its_default_and_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo the wrapping
    for name, field in Settings.model_fields.items():
        variable = f"SCENE_{name.upper()}"
        default = default_text(field.get_default(call_default_factory=True))
        assert f"{variable} (default: {default})" in text
        assert field.description, f"{name} has no description for --help"
        assert " ".join(field.description.split()) in text
    assert "SCENE_MAX_OUTPUT_PIXELS (default: 2097152)" in text
    assert "SCENE_LOG_LEVEL (default: info) Least severe log messages written. One of: critical," in text


def settings_table(markdown: str) -> dict[str, tuple[str, str]]:
    """``variable -> (default cell, meaning cell)`` from docs/serving.md's settings table."""
    section = markdown.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `SCENE_")]
    table = {}
    for row in rows:
        variable, default, meaning = (cell.strip() for cell in row.strip("|").split(" | ", 2))
        table[variable.strip("`")] = (default, meaning)
    return table


def test_the_settings_table_in_the_docs_matches_the_settings_model() -> None:
    table = settings_table((ROOT / "docs" / "serving.md").read_text())
    described = {variable: default for variable, default, _ in describe_settings()}
    assert set(table) == set(described), "docs/serving.md's settings table and Settings differ"
    for variable, (default_cell, meaning) in table.items():
        assert default_cell.startswith(f"`{described[variable]}`"), (variable, default_cell)
        assert meaning
