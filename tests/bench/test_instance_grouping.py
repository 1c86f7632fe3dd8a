"""The instance-grouping benchmark keeps working (its figures live in docs/benchmarks.md)."""

import pytest

from bench import instance_grouping


def test_instance_grouping_smoke_run_reports_time_and_quality(capsys: pytest.CaptureFixture[str]) -> None:
    instance_grouping.main(["--count", "2", "--runs", "1", "--pool", "3", "--methods", "peaks"])
    out = capsys.readouterr().out
    assert "ms/image" in out and "the most crowded of the first 3 scenes" in out
    assert "recall" in out
