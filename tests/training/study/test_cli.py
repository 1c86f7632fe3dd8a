"""The ``scene-study`` command: its exit status and what it prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.training.study.conftest import toy_study
from training.study.cli import main


def test_scene_study_command_reports_and_exits_zero_when_done(
    toy_run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(toy_run["config"]), "--report"]) == 0
    assert "table.md" in capsys.readouterr().out


def test_jobs_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(toy_study(tmp_path)), "--jobs", "0"]) == 2
    assert "scene-study: error: --jobs: must be positive, got 0" in capsys.readouterr().err
