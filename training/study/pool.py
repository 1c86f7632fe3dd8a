"""Advancing the pending runs: one after another here, or several at once in worker processes.

On a small CPU model two one-thread runs train faster together than one two-thread
run (docs/study.md), so ``--jobs J`` trains J runs at once, each in its own process
with a share of the cores. A worker stops at its next chunk boundary when the parent
asks it to (a deadline, SIGTERM, an error in another run) or dies.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch

from training.study.advance import Budget, advance, say_on_stdout
from training.study.config import StudyConfig
from training.study.plan import FAILED, PlannedRun, WaitingError, run_settings
from training.weighting import NonFiniteLossError


def run_in_turn(
    study: StudyConfig, pending: list[PlannedRun], budget: Budget, say: Callable[[str], None]
) -> None:
    """Advance runs one after another in this process; finished runs leave ``pending``."""
    while pending and not budget.exhausted():
        picked = next_runnable(study, pending, running=())
        if picked is None:
            break  # every pending run waits for one that failed
        run, extra = picked
        try:
            finished = advance(study, run, extra, budget, say)
        except NonFiniteLossError as error:
            finished = record_failure(run, error, say)
        if finished:
            pending.remove(run)
            budget.finished += 1


def next_runnable(
    study: StudyConfig, pending: Sequence[PlannedRun], running: Sequence[PlannedRun]
) -> tuple[PlannedRun, dict[str, Any]] | None:
    """The first pending run that is not running and waits for nothing, with its settings."""
    for run in pending:
        if run in running:
            continue
        try:
            return run, run_settings(study, run)
        except WaitingError:
            continue
    return None


def record_failure(run: PlannedRun, error: NonFiniteLossError, say: Callable[[str], None]) -> bool:
    (run.run_dir / FAILED).write_text(json.dumps({"error": str(error)}))
    say(f"{run.label}: failed: {error}")
    return True


def run_in_parallel(
    study: StudyConfig, pending: list[PlannedRun], budget: Budget, jobs: int, say: Callable[[str], None]
) -> None:
    """Advance up to ``jobs`` runs at once, each in a worker process with ``cores // jobs``
    torch threads; finished runs leave ``pending``. A run that waits for others (the
    grid's best weights) starts once they are finished. Workers print their own progress
    lines; the budget's deadline holds in each of them, and no run starts that could
    take the finished runs past ``max_runs``. Only the budget's ``max_minutes`` and
    ``max_runs`` apply here (a `Budget` subclass's own rule does not reach the workers).
    If a run raises (a changed config, say), the other workers stop at their next
    chunk boundary and the error reaches the caller."""
    if not pending:
        return
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // jobs)
    say(f"training {jobs} runs at once, {threads} torch thread(s) each")
    if jobs > cores:
        say(f"warning: {jobs} jobs on {cores} cores: the runs will share cores")
    # Spawned, not forked: forking a process that has run torch can hang its thread pools.
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    running: dict[Future[bool], PlannedRun] = {}
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker, initargs=(threads, stop)
    ) as pool:
        try:
            while True:
                _start_runs(study, pending, budget, jobs, pool, running)
                if not running:
                    return
                done, _ = wait(running, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
                if budget.exhausted():
                    stop.set()  # a SIGTERM or the deadline: workers end at their chunk boundary
                _count_ended(done, running, pending, budget, say)
        except BaseException:
            stop.set()  # the pool's exit waits for the running workers: let them finish a chunk, not a run
            raise


# How often the parent looks at its budget while workers train: a stop request
# reaches the workers within this many seconds.
_POLL_SECONDS = 1.0


def _start_runs(
    study: StudyConfig,
    pending: list[PlannedRun],
    budget: Budget,
    jobs: int,
    pool: ProcessPoolExecutor,
    running: dict[Future[bool], PlannedRun],
) -> None:
    """Start runnable pending runs until ``jobs`` are running or the budget allows no more."""
    while len(running) < jobs and budget.allows_another(len(running)):
        picked = next_runnable(study, pending, list(running.values()))
        if picked is None:
            break
        run, extra = picked
        deadline = _WorkerBudget(budget.max_minutes, started=budget.started)
        running[pool.submit(_advance_in_worker, study, run, extra, deadline)] = run


def _count_ended(
    done: set[Future[bool]],
    running: dict[Future[bool], PlannedRun],
    pending: list[PlannedRun],
    budget: Budget,
    say: Callable[[str], None],
) -> None:
    """Take the ended runs out of ``running``, the finished ones out of ``pending``; raise the first error."""
    errors: list[BaseException] = []
    for future in done:  # every finished run is counted before an error is raised
        run = running.pop(future)
        try:
            finished = future.result()
        except NonFiniteLossError as error:
            finished = record_failure(run, error, say)
        except Exception as error:
            errors.append(error)
            continue
        if finished:
            pending.remove(run)
            budget.finished += 1
    if errors:
        raise errors[0]


# Set in each worker process by `_start_worker`: the parent's request to stop early, and
# the parent's process id (a worker whose parent has died stops at its next chunk).
_stop_request: Any = None
_parent_pid: int | None = None


def _start_worker(threads: int, stop: Any) -> None:
    global _stop_request, _parent_pid
    # A SIGTERM to the whole process group (a terminal, a supervisor) is the parent's to
    # handle: it asks every worker to stop at its chunk boundary.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _stop_request = stop
    _parent_pid = os.getppid()


def _orphaned() -> bool:
    """Whether this worker's parent has died (killed outright, with no chance to stop it)."""
    return _parent_pid is not None and os.getppid() != _parent_pid


@dataclass
class _WorkerBudget(Budget):
    """The parent's deadline, and spent as soon as the parent asks the workers to stop or dies."""

    def exhausted(self) -> bool:
        stop_requested = _stop_request is not None and _stop_request.is_set()
        return super().exhausted() or stop_requested or _orphaned()


def _advance_in_worker(
    study: StudyConfig, run: PlannedRun, extra: dict[str, Any], budget: _WorkerBudget
) -> bool:
    """`advance` in a worker process, with progress on stdout, until the caller's deadline
    (``budget``'s ``max_minutes`` from its ``started``: `time.monotonic` is one clock for
    every process) or the caller's request to stop."""
    return advance(study, run, extra, budget, say_on_stdout)
