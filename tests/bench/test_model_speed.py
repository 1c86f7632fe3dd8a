"""The model-speed benchmark keeps working: both softmax layouts export, run and agree."""

import pytest

from bench import model_speed


def test_model_speed_smoke_run_finds_identical_labels(capsys: pytest.CaptureFixture[str]) -> None:
    model_speed.main(["--smoke"])
    out = capsys.readouterr().out
    assert "labels differing: 0 of" in out
    assert "class axis (before)" in out and "last axis (after)" in out
    assert "kernel time:" in out
