"""A grid whose optimum is on its edge grows beyond it; one whose optimum is inside is done."""

from __future__ import annotations

import json
from pathlib import Path

from tests.training.study.conftest import toy_study
from training.study.grid import beyond_edges, grid_state
from training.study.parse import load_study
from training.study.plan import plan, point_label

VAL = {"semantic_miou": 40.0, "instance_mean_error_px": 4.0, "inverse_depth_mean_error": 0.02}


def wide_study(tmp_path: Path, max_points: int = 6) -> Path:
    grid = {
        "weights": {"semantic": [1], "instance": [0.01, 0.1], "depth": [1, 10]},
        "seeds": [1, 2],
        "widen": {"factor": 10, "max_points": max_points},
    }
    return toy_study(tmp_path, seeds=[1], comparisons=[], arms=[{"name": "grid", "grid": grid}])


def finish(out: Path, point: dict[str, float], miou: tuple[float, float]) -> None:
    """Both seeds of a grid point, with these validation mIoUs (the errors equal everywhere)."""
    for seed, value in zip((1, 2), miou, strict=True):
        run_dir = out / "grid" / point_label(point) / f"seed{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps({"val": VAL | {"semantic_miou": value}}))


def test_an_optimum_on_the_edge_adds_the_points_beyond_it_until_it_is_inside(tmp_path: Path) -> None:
    study = load_study(wide_study(tmp_path))
    grid = study.arm("grid")
    first = [run.grid_point for run in plan(study, study.seeds)]
    assert len(first) == 8  # 4 points x 2 seeds
    corner = {"semantic": 0.498, "instance": 0.00498, "depth": 0.498}  # instance 0.01, depth 1
    # The corner is best on the mean of its seeds (seed 1 alone would pick another point).
    for point in {point_label(p): p for p in first if p}.values():
        finish(study.out, point, (45.0, 45.0) if point == corner else (46.0, 30.0))
    state = grid_state(study, grid)
    assert state.selection is None  # the grid grows first
    added = sorted(point_label(p) for p in state.points if p not in first)
    assert added == [
        "semantic0.5_instance0.0005_depth0.5",  # instance 0.001: below the corner
        "semantic0.901_instance0.00901_depth0.0901",  # depth 0.1: below it
    ]
    labels = [run.label for run in plan(study, study.seeds)]
    assert len(labels) == 12 and "grid semantic0.5_instance0.0005_depth0.5 seed 2" in labels[8:]
    for point in (p for p in state.points if p not in first):
        finish(study.out, point, (40.0, 40.0))
    selection = grid_state(study, grid).selection
    assert selection is not None and selection["weights"] == corner
    widening = selection["widening"]
    assert (widening["inside"], widening["on_edge"], widening["capped"]) == (True, [], False)
    assert sorted(widening["added"]) == added


def test_a_grid_at_its_cap_reports_the_optimum_still_on_the_edge(tmp_path: Path) -> None:
    study = load_study(wide_study(tmp_path, max_points=5))
    for point in {
        point_label(r.grid_point): r.grid_point for r in plan(study, study.seeds) if r.grid_point
    }.values():
        finish(
            study.out,
            point,
            (45.0, 45.0) if point["instance"] == 0.00498 and point["depth"] == 0.498 else (40.0, 40.0),
        )
    selection = grid_state(study, study.arm("grid")).selection
    assert selection is not None  # two more points would pass max_points: none is added
    assert selection["widening"]["capped"] and not selection["widening"]["inside"]
    assert sorted(selection["widening"]["on_edge"]) == ["depth below", "instance below"]
    assert len(plan(study, study.seeds)) == 8  # nothing added


def test_beyond_edges_on_raw_weights() -> None:
    line = [{"instance": v, "depth": 1.0} for v in (0.001, 0.01, 0.1)] + [
        {"instance": 0.01, "depth": d} for d in (0.1, 10.0)
    ]
    assert beyond_edges(line, {"instance": 0.01, "depth": 1.0}, ["instance", "depth"], 10) == []
    assert beyond_edges(line, {"instance": 0.1, "depth": 1.0}, ["instance", "depth"], 10) == [
        ("instance", "above", {"instance": 1.0, "depth": 1.0}),
        ("depth", "below", {"instance": 0.1, "depth": 0.1}),
        ("depth", "above", {"instance": 0.1, "depth": 10.0}),
    ]
    # A weight of 0 cannot go lower: that side is closed.
    assert beyond_edges([{"instance": 0.0}, {"instance": 1.0}], {"instance": 0.0}, ["instance"], 10) == []
