"""bench/ort_threads.py keeps working: its smoke run measures every thread setting."""

from __future__ import annotations

from bench import ort_threads


def test_ort_threads_smoke_run_measures_every_setting() -> None:
    results = ort_threads.main(["--smoke"])
    assert set(results) == set(ort_threads.SETTINGS)
    assert all(r["wall_ms"] > 0 and r["cpu_ms"] > 0 for r in results.values())
