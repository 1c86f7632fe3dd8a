"""The report: the table over seeds, and the pilot rule that asks for more seeds."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest

from tests.training.study.conftest import result
from training.study.config import Pilot
from training.study.report import pilot_decision
from training.study.stats import summarise


def test_the_table_holds_mean_and_std_over_seeds(toy_run: dict[str, Any]) -> None:
    out = toy_run["out"]
    report = json.loads((out / "results.json").read_text())
    assert len(report["results"]) == 4
    for row in report["table"]:
        values = [
            json.loads((out / row["arm"] / f"seed{s}" / "result.json").read_text())["test"]["semantic_miou"]
            for s in (1, 2)
        ]
        assert row["seeds"] == [1, 2]
        assert row["metrics"]["semantic_miou"]["mean"] == pytest.approx(statistics.fmean(values))
        assert row["metrics"]["semantic_miou"]["std"] == pytest.approx(statistics.stdev(values))
        expected = f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"
        assert f"| {row['arm']} |" in (out / "table.md").read_text()
        assert expected in (out / "table.md").read_text()
        line = next(
            x for x in (out / "table.md").read_text().splitlines() if x.startswith(f"| {row['arm']} |")
        )
        assert line.endswith(f" | {row['clip_rate']:.0%} |")  # the toy records its clip rate
    assert "## uncertainty against unweighted" in (out / "table.md").read_text()
    assert (out / "sigma_uncertainty.png").stat().st_size > 1000


def test_pilot_rule_asks_for_more_seeds_when_the_miou_spread_is_wide() -> None:
    pilot = Pilot(["u", "w"], [1, 2], {}, 1.0, [1, 2, 3, 4, 5])
    rows = summarise([result("u", 1, 60, 1, 1), result("u", 2, 62, 1, 1)], ["u"])  # std 1.41
    assert pilot_decision(pilot, rows, True)["seeds"] == [1, 2, 3, 4, 5]
    rows = summarise([result("u", 1, 60, 1, 1), result("u", 2, 61, 1, 1)], ["u"])  # std 0.71
    assert pilot_decision(pilot, rows, True) | {"miou_std": None} == {
        "complete": True,
        "miou_std": None,
        "miou_std_limit": 1.0,
        "over_limit": False,
        "seeds": None,
    }


def test_the_table_reports_how_often_the_gradient_clip_bound() -> None:
    # A rate-matched arm whose steps are mostly clipped did not get the rate it was
    # matched to; the table has to show it beside the metrics.
    clipped = [result("w", 1, 60, 1, 1) | {"clip_rate": 0.6}, result("w", 2, 61, 1, 1) | {"clip_rate": 0.7}]
    unknown = [result("u", 1, 60, 1, 1) | {"clip_rate": 0.1}, result("u", 2, 61, 1, 1)]
    rows = summarise(clipped + unknown, ["w", "u"])
    assert rows[0]["clip_rate"] == pytest.approx(0.65)
    assert rows[1]["clip_rate"] is None  # a run that did not record it: no mean over the rest
