"""A toy study on two-step runs, trained once for every study test that reads it, and result builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from training.checkpoint import load_checkpoint
from training.study.advance import Budget
from training.study.parse import load_study
from training.study.run import run_study

REPO = Path(__file__).resolve().parents[3]
SMOKE = REPO / "configs" / "smoke.yaml"


def toy_study(root: Path, **changes: Any) -> Path:
    """Two arms (unweighted, uncertainty), two seeds, two one-step chunks per run, 3 test scenes.

    Training reads 8 scenes (32x64) rendered once to disk, validation 2.
    """
    study: dict[str, Any] = {
        "base": str(SMOKE),
        # 32x64 rather than the smoke config's 64x128: a third of the training cost.
        "overrides": {"steps": 2, "checkpoint_every": 1, "data.height": 32, "data.width": 64},
        "out": str(root / "study"),
        "scenes": {"root": str(root / "scenes"), "train": 8, "val": 2},
        "seeds": [1, 2],
        "chunk_steps": 1,
        "evaluation": {"split": "test", "seed": 1000, "count": 3, "batch_size": 3},
        "arms": [
            {"name": "unweighted", "overrides": {"loss.strategy": "fixed"}},
            {"name": "uncertainty", "overrides": {"loss.strategy": "uncertainty"}},
        ],
        "comparisons": [{"arm": "uncertainty", "reference": "unweighted"}],
    }
    study |= changes
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


class ChunkBudget(Budget):
    """Spent after ``limit`` training chunks: an invocation cut short mid-study."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def exhausted(self) -> bool:
        return self.chunks >= self.limit


@pytest.fixture(scope="package")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The toy study cut after three chunks, then finished by a second call, then called a third time."""
    root = tmp_path_factory.mktemp("study")
    config = toy_study(root)
    out = root / "study"
    first_lines: list[str] = []
    done = run_study(load_study(config), ChunkBudget(3), say=first_lines.append)
    cut = {
        "done": done,
        "rendered": [line for line in first_lines if line.startswith("rendering")],
        "unweighted_result": (out / "unweighted" / "seed1" / "result.json").is_file(),
        "uncertainty_step": load_checkpoint(out / "uncertainty" / "seed1" / "last.pt")["step"],
        "uncertainty_result": (out / "uncertainty" / "seed1" / "result.json").is_file(),
    }
    finished_mtime = (out / "unweighted" / "seed1" / "result.json").stat().st_mtime_ns
    second_lines: list[str] = []
    second_done = run_study(load_study(config), Budget(), say=second_lines.append)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".pt", ".json")}
    third_lines: list[str] = []
    third_done = run_study(load_study(config), Budget(), say=third_lines.append)
    return {
        "out": out,
        "config": config,
        "cut": cut,
        "first": first_lines,
        "second": second_lines,
        "second_done": second_done,
        "third": third_lines,
        "third_done": third_done,
        "finished_mtime": finished_mtime,
        "mtimes": mtimes,
    }


def result(arm: str, seed: int, miou: float, instance: float, depth: float) -> dict[str, Any]:
    """A finished three-task run's result as `training.study.score.score` writes it (test metrics only)."""
    return {
        "arm": arm,
        "seed": seed,
        "grid_point": None,
        "strategy": "fixed",
        "tasks": ["semantic", "instance", "depth"],
        "fixed_weights": {"semantic": 1 / 3, "instance": 1 / 3, "depth": 1 / 3},
        "final_weights": None,
        "test": {
            "semantic_miou": miou,
            "instance_mean_error_px": instance,
            "inverse_depth_mean_error": depth,
        },
    }
