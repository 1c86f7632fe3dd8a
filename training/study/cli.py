"""The ``scene-study`` command: check the flags and the config, restore, then run or report.

Exit status: 0 when every run is finished, 3 when the budget ended with runs left, 2
for a bad config (the message names the key).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from training.checkpoint import CheckpointError
from training.config import ConfigError
from training.data.sample import DataConfigError
from training.study.advance import STOP_REQUESTED, Budget, say_on_stdout
from training.study.config import StudyConfig, StudyConfigError
from training.study.parse import load_study
from training.study.report import write_report
from training.study.restore import restore_results
from training.study.run import run_study


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    previous: Any = None
    try:
        _check_limits(args)
        study = load_study(args.config)
        # `kill` (SIGTERM) stops the study the way a deadline does: running runs finish
        # their chunk, so its checkpoint is kept, and no worker goes on training alone.
        STOP_REQUESTED.clear()
        previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
        done = _restore_then_run(study, args)
    except (StudyConfigError, ConfigError, CheckpointError, DataConfigError) as error:
        print(f"scene-study: error: {error}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    root = study.out / "pilot" if args.pilot else study.out
    print(f"scene-study: table {root / 'table.md'}, raw results {root / 'results.json'}")
    if STOP_REQUESTED.is_set():
        return 128 + signal.SIGTERM  # not 3: a loop that restarts on 3 must not start again
    return 0 if done else 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scene-study",
        description="Re-run the paper's Table 1 (single task, unweighted, grid-searched fixed weights, "
        "learned uncertainty weighting) over seeds: resumable, in chunks, then a table with mean ± std.",
        epilog="Exit status: 0 when every run is finished, 3 when the budget ended with runs left "
        "(run the same command again to go on), 2 for a bad config.",
    )
    parser.add_argument("--config", type=Path, required=True, help="study config (see configs/study.yaml)")
    parser.add_argument("--pilot", action="store_true", help="run the pilot arms instead of the study")
    parser.add_argument(
        "--report", action="store_true", help="only write the table and plots from finished runs"
    )
    parser.add_argument(
        "--restore",
        type=Path,
        metavar="RESULTS_JSON",
        help="first mark the runs of a results.json written elsewhere (another machine, an earlier "
        "checkout) as finished here, then go on as usual",
    )
    parser.add_argument("--max-minutes", type=float, help="start no training chunk after this many minutes")
    parser.add_argument("--max-runs", type=int, help="stop after finishing this many runs")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs trained at once, each in its own process (default 1)"
    )
    return parser


def _check_limits(args: argparse.Namespace) -> None:
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise StudyConfigError(f"--max-minutes: must be positive, got {args.max_minutes}")
    if args.max_runs is not None and args.max_runs <= 0:
        raise StudyConfigError(f"--max-runs: must be positive, got {args.max_runs}")
    if args.jobs <= 0:
        raise StudyConfigError(f"--jobs: must be positive, got {args.jobs}")


def _restore_then_run(study: StudyConfig, args: argparse.Namespace) -> bool:
    """Restore ``--restore``'s runs, then report or train; True when no run is left."""
    if args.restore is not None:
        restore_results(study, args.restore, say_on_stdout)
    if args.report:
        write_report(study, pilot=args.pilot)
        return True
    budget = Budget(args.max_minutes, args.max_runs)
    return run_study(study, budget, pilot=args.pilot, say=say_on_stdout, jobs=args.jobs)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    say_on_stdout("stopping (SIGTERM): running runs finish their chunk; the same command goes on later")
    STOP_REQUESTED.set()
