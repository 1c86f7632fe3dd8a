"""Training one run chunk by chunk, resumable, within a budget; then scoring it.

Each invocation trains in chunks of ``chunk_steps`` so a time budget can stop it
between chunks: a run with ``result.json`` is finished, one with ``last.pt`` resumes
from it, and ``study_run.json`` records the config it was started under.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from training.checkpoint import load_checkpoint, weighting_from_checkpoint
from training.config import ConfigError, TrainConfig, from_dict, to_dict
from training.study.config import TASK_METRICS, StudyConfig, StudyConfigError, training_config
from training.study.plan import RESULT, RUN_RECORD, PlannedRun, derivation
from training.study.score import score
from training.train import setup_placement, train

# Set by scene-study's SIGTERM handler. Every budget in this process is spent once it
# is set, so training stops at its next chunk boundary and the checkpoint is kept.
# The handler only sets it: an exception raised from a signal handler can land inside
# the process pool's locking and leave the study hanging instead of ending.
STOP_REQUESTED = threading.Event()


@dataclass
class Budget:
    """When this invocation stops starting new chunks: after ``max_minutes`` or
    ``max_runs`` finished runs, or once a stop is requested (`STOP_REQUESTED`)."""

    max_minutes: float | None = None
    max_runs: int | None = None
    started: float = field(default_factory=time.monotonic)
    finished: int = 0
    chunks: int = 0

    def exhausted(self) -> bool:
        over_time = self.max_minutes is not None and time.monotonic() - self.started >= self.max_minutes * 60
        over_runs = self.max_runs is not None and self.finished >= self.max_runs
        return over_time or over_runs or STOP_REQUESTED.is_set()

    def allows_another(self, in_flight: int) -> bool:
        """Whether a run may start while ``in_flight`` others are still going."""
        room = self.max_runs is None or self.finished + in_flight < self.max_runs
        return room and not self.exhausted()


def advance(
    study: StudyConfig, run: PlannedRun, extra: dict[str, Any], budget: Budget, say: Callable[[str], None]
) -> bool:
    """Train the run chunk by chunk until it is finished or the budget ends; then score it.

    Returns True when the run is finished (``result.json`` written). A run started
    before under another config is refused rather than resumed into a mixture.
    """
    config = training_config(study, run.arm, extra, seed=run.seed, run_dir=run.run_dir, pilot=run.pilot)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    record = _run_record(run, config)
    step = _steps_done(run, config)
    trained = (run.run_dir / "metrics.json").is_file()
    if step and not trained:
        say(f"{run.label}: resuming at step {step}/{config.steps}")
    while not trained:
        if budget.exhausted():
            return False
        step = _train_chunk(study, run, extra, config, step, budget, record, say)
        trained = step >= config.steps
    result = score(study, run, config, record["train_seconds"])
    if run.arm.from_learned is not None:
        # Where the fixed weights came from (the learned run's log, and k), beside the result.
        result["derived_weights"] = derivation(study, run)[1]
    (run.run_dir / RESULT).write_text(json.dumps(result, indent=1))
    say(_result_line(run, result))
    return True


def _comparable(config: TrainConfig) -> dict[str, Any]:
    data = to_dict(config)
    for key in ("run_dir", "resume", "stop_at"):
        data.pop(key)
    return data


def _run_record(run: PlannedRun, config: TrainConfig) -> dict[str, Any]:
    """The run's config and training time so far; `StudyConfigError` if it started under another config."""
    record_path = run.run_dir / RUN_RECORD
    record: dict[str, Any] = {"config": _comparable(config), "train_seconds": 0.0}
    if not record_path.is_file():
        return record
    saved: dict[str, Any] = json.loads(record_path.read_text())
    # Read through today's config, so a setting added since, at its default, is no change
    # (a new setting's default must keep the behaviour from before it); a key since
    # removed or renamed fails to read and is compared as written (so refused).
    with contextlib.suppress(ConfigError):
        saved["config"] = _comparable(from_dict(saved["config"]))
    if saved["config"] != record["config"]:
        keys = record["config"].keys() | saved["config"].keys()
        changed = sorted(k for k in keys if record["config"].get(k) != saved["config"].get(k))
        raise StudyConfigError(
            f"{run.run_dir} was started with a different training config (differs in: "
            f"{', '.join(changed)}); restore the study config or delete that folder"
        )
    return saved


def _steps_done(run: PlannedRun, config: TrainConfig) -> int:
    """The step of the run's last checkpoint (0 without one), writing ``metrics.json`` if it is due."""
    checkpoint = run.run_dir / "last.pt"
    state: dict[str, Any] = (
        load_checkpoint(checkpoint) if checkpoint.is_file() else {"step": 0, "metrics": {}}
    )
    step = int(state["step"])
    if step >= config.steps and state["metrics"] and not (run.run_dir / "metrics.json").is_file():
        # Stopped between the final checkpoint and metrics.json: the checkpoint holds them.
        final = {"step": step, "sigma": weighting_from_checkpoint(state).sigma(), **state["metrics"]}
        (run.run_dir / "metrics.json").write_text(json.dumps(final, indent=2))
    return step


def _train_chunk(
    study: StudyConfig,
    run: PlannedRun,
    extra: dict[str, Any],
    config: TrainConfig,
    step: int,
    budget: Budget,
    record: dict[str, Any],
    say: Callable[[str], None],
) -> int:
    """Train from ``step`` (resuming from ``last.pt``) to the next chunk's end; returns that step.

    The training time is added to ``record`` and saved after every chunk, so a study
    stopped between chunks still reports what each run cost.
    """
    stop = min(config.steps, step + study.chunk_steps)
    chunk = training_config(
        study,
        run.arm,
        extra,
        seed=run.seed,
        run_dir=run.run_dir,
        pilot=run.pilot,
        resume=run.run_dir / "last.pt" if step else None,
        stop_at=stop if stop < config.steps else None,
    )
    started = time.monotonic()
    train(chunk, setup_placement(chunk))
    seconds = time.monotonic() - started
    budget.chunks += 1
    record["train_seconds"] += seconds
    (run.run_dir / RUN_RECORD).write_text(json.dumps(record, indent=1))
    say(
        f"{run.label}: step {stop}/{config.steps}, {_duration(record['train_seconds'])} trained "
        f"({seconds / (stop - step):.2f} s/step)"
    )
    return stop


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def _result_line(run: PlannedRun, result: dict[str, Any]) -> str:
    test = result["test"]
    parts = [f"{TASK_METRICS[t][1]} {test[TASK_METRICS[t][0]]:.4g}" for t in result["tasks"]]
    return f"{run.label}: finished; test {', '.join(parts)}"


def say_on_stdout(line: str) -> None:
    """A progress line as scene-study prints it, flushed at once: worker processes print their own."""
    print(f"scene-study: {line}", flush=True)
