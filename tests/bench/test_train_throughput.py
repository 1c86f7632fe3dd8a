"""The training-throughput benchmark keeps working, including its several-processes mode."""

import pytest

from bench import train_throughput


def test_one_process_and_two_at_once_are_both_timed(capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["data.height=32", "data.width=64", "data.workers=0", "batch_size=2"]
    counts = ["--steps", "1", "--warmup", "1", "--runs", "1", "--jobs", "2"]
    train_throughput.main(["--config", "configs/smoke.yaml", *counts, *tiny])
    out = capsys.readouterr().out
    assert "batch 2 of 32x64" in out
    assert "median three tasks:" in out and "median semantic only (baseline):" in out
    assert "median 2 processes at once:" in out and "x one process" in out
