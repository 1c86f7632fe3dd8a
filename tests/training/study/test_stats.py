"""The arithmetic: mean ± std over seeds, the paired one-sided bound, t quantiles, Δm% and mean rank."""

from __future__ import annotations

import pytest

from tests.training.study.conftest import result
from training.study.config import Comparison
from training.study.stats import compare, multitask_scores, summarise, t95


def test_summary_is_the_mean_and_sample_std_over_seeds() -> None:
    results = [result("a", 1, 60, 4.0, 0.1), result("a", 2, 62, 5.0, 0.1), result("a", 3, 64, 6.0, 0.1)]
    (row,) = summarise(results, ["a"])
    assert row["seeds"] == [1, 2, 3]
    assert row["metrics"]["semantic_miou"] == {"mean": 62.0, "std": pytest.approx(2.0)}
    assert row["metrics"]["instance_mean_error_px"] == {"mean": 5.0, "std": pytest.approx(1.0)}
    assert row["metrics"]["inverse_depth_mean_error"]["std"] == pytest.approx(0.0, abs=1e-12)
    (single,) = summarise([result("b", 1, 50, 1, 1)], ["b"])
    assert single["metrics"]["semantic_miou"] == {"mean": 50.0, "std": None}


def test_non_inferiority_uses_the_paired_one_sided_bound() -> None:
    arm = {1: {"semantic_miou": 61.0, "instance_mean_error_px": 1.0}, 2: {"semantic_miou": 63.0}}
    arm[2]["instance_mean_error_px"] = 1.0
    arm[3] = {"semantic_miou": 62.0, "instance_mean_error_px": 1.0}
    reference = {
        s: {"semantic_miou": m, "instance_mean_error_px": 1.0} for s, m in ((1, 60), (2, 62), (3, 64))
    }
    rows = {r["metric"]: r for r in compare(arm, reference, Comparison("a", "r", 1.5, 0.05))}
    # Paired differences 1, 1, -2: mean 0, sd sqrt(3); bound 0 - 2.920 * sqrt(3) / sqrt(3) = -2.920.
    assert rows["semantic_miou"]["bound"] == pytest.approx(-2.920)
    assert rows["semantic_miou"]["holds"] is False
    assert compare(arm, reference, Comparison("a", "r", 3.0, 0.05))[0]["holds"] is True
    # Errors equal: 1 - 1.05 * 1 = -0.05 every seed, no spread, so the bound is -0.05 < 0.
    assert rows["instance_mean_error_px"]["bound"] == pytest.approx(-0.05)
    assert rows["instance_mean_error_px"]["holds"] is True
    assert compare(arm, reference, Comparison("a", "r", 1.5, 0.0))[1]["holds"] is False
    one_seed = compare({1: arm[1]}, {1: reference[1]}, Comparison("a", "r"))
    assert one_seed[0]["holds"] is None


def test_t_quantiles_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 30):
        assert t95(df) == pytest.approx(stats.t.ppf(0.95, df), abs=1e-3)


def test_delta_m_and_mean_rank_by_hand() -> None:
    def row(arm: str, **means: float) -> dict[str, object]:
        return {"arm": arm, "metrics": {k: {"mean": v, "std": None} for k, v in means.items()}}

    rows = [
        row("semantic_only", semantic_miou=50.0),
        row("instance_only", instance_mean_error_px=2.0),
        row("depth_only", inverse_depth_mean_error=0.02),
        # mIoU 10% worse, instance error 10% better, depth 40% worse: Δm = (10 - 10 + 40) / 3.
        row("a", semantic_miou=45.0, instance_mean_error_px=1.8, inverse_depth_mean_error=0.028),
        row("b", semantic_miou=55.0, instance_mean_error_px=2.2, inverse_depth_mean_error=0.02),
        row("pair", semantic_miou=50.0, instance_mean_error_px=3.0),
    ]
    scores = multitask_scores(rows)
    assert scores["a"]["delta_m_percent"] == pytest.approx(40 / 3)
    assert scores["b"]["delta_m_percent"] == pytest.approx((-10 + 10 + 0) / 3)
    assert (
        scores["pair"]["delta_m_percent"] == pytest.approx((0 + 50) / 2)
        and scores["pair"]["mean_rank"] is None
    )
    # a: ranks 2, 1, 2; b: 1, 2, 1.
    assert scores["a"]["mean_rank"] == pytest.approx(5 / 3) and scores["b"]["mean_rank"] == pytest.approx(
        4 / 3
    )
    assert set(scores) == {"a", "b", "pair"}
