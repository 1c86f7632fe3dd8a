"""`scene-study`: the paper's Table 1 on this project's data, in one resumable command.

    scene-study --config configs/study.yaml [--max-minutes M] [--max-runs N] [--jobs J]
    scene-study --config configs/study.yaml --pilot      # the seed-spread pilot first
    scene-study --config configs/study.yaml --report     # only (re)write the table and plots
    scene-study --config configs/study.yaml --restore results.json  # go on from runs finished elsewhere

A study config names a base training config with overrides, the seeds and the arms
(single task, unweighted, a fixed-weight grid, the grid's best weights, learned
uncertainty, ...). Every arm trains the same model on the same data with the same
schedule and is scored on the same held-out scenes. Run ``k`` of arm ``a`` lives in
``<out>/<a>/seed<k>/`` (grid points in ``<out>/<grid>/<point>/seed<k>/``): a run with
``result.json`` is finished and skipped, one with ``last.pt`` resumes from it, and each
invocation trains in chunks of ``chunk_steps`` so a time budget can stop it between
chunks. ``--jobs J`` trains J runs at once, each in its own process with a share of
the cores (on a small CPU model two one-thread runs train faster together than one
two-thread run: docs/study.md). The results are then gathered into ``results.json``
(every run's raw numbers), ``table.md`` (mean ± std over seeds, comparisons) and
plots, all in ``<out>``.

One job per module: `config` (the study config as types), `parse` (reading and
checking a study file), `folders` (where runs live, what marks them finished), `plan`
(the runs in order, settings that wait on other runs), `grid` (a grid's points, its
selection on validation, widening it), `derive` (fixed weights read from a learned
run's log), `advance` (one run, chunk by chunk), `score` (a finished run's result),
`pool` (runs in turn or in worker processes), `run` (one invocation), `restore`,
`stats`, `report` (``results.json`` and ``table.md``), `plots` and `cli`.

See docs/study.md for the arms, the fairness choices and the tests.
"""

from training.study.advance import Budget, advance
from training.study.cli import main
from training.study.config import (
    TASK_METRICS,
    Arm,
    Comparison,
    Evaluation,
    FromLearned,
    Grid,
    Pilot,
    Scenes,
    StudyConfig,
    StudyConfigError,
    Widen,
    training_config,
)
from training.study.grid import beyond_edges, grid_points
from training.study.parse import load_study
from training.study.plan import PlannedRun, WaitingError, plan, run_settings, select_grid_point, study_seeds
from training.study.report import pilot_decision, write_report
from training.study.restore import restore_results
from training.study.run import run_study
from training.study.score import clip_rate, mean_total_weight, score
from training.study.stats import compare, mean_std, multitask_scores, summarise, t95

__all__ = [
    "TASK_METRICS",
    "Arm",
    "Budget",
    "Comparison",
    "Evaluation",
    "FromLearned",
    "Grid",
    "Pilot",
    "PlannedRun",
    "Scenes",
    "StudyConfig",
    "StudyConfigError",
    "WaitingError",
    "Widen",
    "advance",
    "beyond_edges",
    "clip_rate",
    "compare",
    "grid_points",
    "load_study",
    "main",
    "mean_std",
    "mean_total_weight",
    "multitask_scores",
    "pilot_decision",
    "plan",
    "restore_results",
    "run_settings",
    "run_study",
    "score",
    "select_grid_point",
    "study_seeds",
    "summarise",
    "t95",
    "training_config",
    "write_report",
]
