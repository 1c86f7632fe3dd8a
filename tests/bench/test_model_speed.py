"""The model-speed benchmark keeps working: both softmax layouts export, run and agree."""

from pathlib import Path

import pytest

from bench import model_speed


def test_model_speed_smoke_run_finds_identical_labels(
    smoke_run: Path, smoke_export: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The session's export is the shipped graph; only the class-axis one is traced here.
    model_speed.main(["--smoke", "--checkpoint", str(smoke_run / "last.pt"), "--onnx", str(smoke_export)])
    out = capsys.readouterr().out
    assert "labels differing: 0 of" in out
    assert "class axis (before)" in out and "last axis (after)" in out
    assert "kernel time:" in out


def test_an_export_without_its_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        model_speed.main(["--smoke", "--onnx", str(tmp_path / "model.onnx")])
    assert "--onnx needs the --checkpoint" in capsys.readouterr().err
