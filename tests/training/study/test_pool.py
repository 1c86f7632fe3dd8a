"""``--jobs``: runs trained in worker processes, which stop when the study stops or dies."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.training.study.conftest import toy_study
from training.checkpoint import load_checkpoint
from training.study import pool
from training.study.cli import main


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_whose_study_died_stops_at_its_next_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed outright (SIGKILL), the study cannot tell its workers: each sees its parent change."""
    monkeypatch.setattr(pool, "_parent_pid", os.getppid())
    assert not pool._WorkerBudget().exhausted()
    monkeypatch.setattr(pool, "_parent_pid", os.getppid() + 1)  # the parent it started under is gone
    assert pool._WorkerBudget().exhausted()


def test_killing_a_parallel_study_stops_its_workers_too(toy_run: dict[str, Any], tmp_path: Path) -> None:
    """SIGTERM to ``scene-study --jobs 2``: the workers stop after their chunk instead of
    training on alone (they used to outlive the parent and could race a restarted study)."""
    scenes = {"root": str(toy_run["out"].parent / "scenes"), "train": 8, "val": 2}
    overrides = {"steps": 200, "checkpoint_every": 1, "data.height": 32, "data.width": 64}
    arms = [{"name": "uncertainty", "overrides": {}}]
    config = toy_study(tmp_path, scenes=scenes, overrides=overrides, arms=arms, comparisons=[])
    command = [sys.executable, "-m", "training.study", "--config", str(config), "--jobs", "2"]
    log = tmp_path / "study.log"
    with log.open("w") as out:  # a file, not a pipe: a surviving worker must not block the test
        study = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while ": step 1/200" not in log.read_text():
            assert study.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        study.send_signal(signal.SIGTERM)
        assert study.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()
        assert "stopping (SIGTERM)" in log.read_text()
        # Nothing of the study's process group is left training.
        deadline = time.monotonic() + 10
        while _group_alive(study.pid):
            assert time.monotonic() < deadline, "a worker outlived the killed study"
            time.sleep(0.2)
    finally:
        if _group_alive(study.pid):
            os.killpg(study.pid, signal.SIGKILL)
    steps = [load_checkpoint(path)["step"] for path in (tmp_path / "study").rglob("last.pt")]
    assert steps and max(steps) < 200


def test_two_jobs_train_every_run_once_in_worker_processes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "study"
    # A run folder started under another config: the worker's error ends the study.
    started_elsewhere = out / "unweighted" / "seed1" / "study_run.json"
    started_elsewhere.parent.mkdir(parents=True)
    started_elsewhere.write_text(json.dumps({"config": {}, "train_seconds": 0.0}))
    unweighted_only = [{"name": "unweighted", "overrides": {"loss.strategy": "fixed"}}]
    config = toy_study(tmp_path, seeds=[1], arms=unweighted_only, comparisons=[])
    assert main(["--config", str(config), "--jobs", "2"]) == 2
    assert "different training config" in capfd.readouterr().err

    started_elsewhere.unlink()
    config = toy_study(tmp_path, seeds=[1])  # two runs: one for each worker
    assert main(["--config", str(config), "--jobs", "2"]) == 0
    printed = capfd.readouterr().out  # the workers' lines come from other processes
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # the cores this process may use
    assert f"training 2 runs at once, {threads} torch thread(s) each" in printed
    for arm in ("unweighted", "uncertainty"):
        run_dir = out / arm / "seed1"
        result = json.loads((run_dir / "result.json").read_text())
        assert (result["arm"], result["seed"], result["steps"]) == (arm, 1, 2)
        with (run_dir / "log.csv").open() as f:
            assert [int(row["step"]) for row in csv.DictReader(f)] == [1, 2]
        # The workers print their progress themselves.
        assert f"{arm} seed 1: finished; test" in printed
    assert (out / "table.md").is_file()


def test_sigterm_to_a_one_job_study_ends_its_chunk_and_asks_for_no_restart(
    toy_run: dict[str, Any], tmp_path: Path
) -> None:
    """Without workers the run trains in the study's own process: SIGTERM lets the chunk
    reach its checkpoint (50 steps here) and ends with 143, not 3, which a restart loop
    (`while ...; [ $? -eq 3 ] || break`) would take as "go on"."""
    scenes = {"root": str(toy_run["out"].parent / "scenes"), "train": 8, "val": 2}
    overrides = {"steps": 200, "checkpoint_every": 50, "data.height": 32, "data.width": 64}
    arms = [{"name": "uncertainty", "overrides": {}}]
    config = toy_study(
        tmp_path, scenes=scenes, overrides=overrides, arms=arms, comparisons=[], seeds=[1], chunk_steps=50
    )
    log = tmp_path / "study.log"
    with log.open("w") as out:
        study = subprocess.Popen(
            [sys.executable, "-m", "training.study", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "| 1/50 [" not in log.read_text():  # the first step of the first chunk
            assert study.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        study.send_signal(signal.SIGTERM)
        assert study.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()
    finally:
        if _group_alive(study.pid):
            os.killpg(study.pid, signal.SIGKILL)
    assert "stopping (SIGTERM)" in log.read_text()
    steps = [load_checkpoint(path)["step"] for path in (tmp_path / "study").rglob("last.pt")]
    assert steps == [50], steps  # the chunk ended at its boundary, and no new chunk began
