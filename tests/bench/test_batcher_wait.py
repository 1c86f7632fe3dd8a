"""The batcher-wait benchmark keeps working (its figures live in docs/benchmarks.md)."""

import pytest

from bench import batcher_wait


def test_batcher_wait_smoke_run_reports_each_case(capsys: pytest.CaptureFixture[str]) -> None:
    batcher_wait.main(["--smoke"])
    out = capsys.readouterr().out
    assert out.count("lone request waits") == 2
    assert "waits for one still decoding" in out
