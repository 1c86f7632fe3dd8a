from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from training.config import ConfigError, LossConfig
from training.weighting import (
    TASKS,
    WEIGHTINGS,
    DynamicWeightAverage,
    NonFiniteLossError,
    UncertaintyWeighting,
    build_weighting,
    build_weighting_from_config,
    check_finite,
)

LOG_VARIANCE = {"semantic": 0.5, "instance": -1.0, "depth": 2.0}
LOSSES = {"semantic": 2.0, "instance": 3.0, "depth": 0.25}


def _tensors(values: dict[str, float]) -> dict[str, Tensor]:
    return {task: torch.tensor(value) for task, value in values.items()}


def _log_variance(weighting: torch.nn.Module, task: str) -> float:
    return float(weighting.get_parameter(f"task_log_variance.{task}").item())


# --- uncertainty (Kendall et al., Eq. 10) -------------------------------------------


def test_uncertainty_total_matches_eq_10_by_hand() -> None:
    weighting = build_weighting("uncertainty", initial_log_variance=LOG_VARIANCE)
    total, weights = weighting(_tensors(LOSSES))
    # c = 1 for semantic (classification), 1/2 for instance and depth (regression).
    expected = (
        1.0 * math.exp(-0.5) * 2.0
        + 0.5 / 2
        + 0.5 * math.exp(1.0) * 3.0
        + -1.0 / 2
        + 0.5 * math.exp(-2.0) * 0.25
        + 2.0 / 2
    )
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert weights == pytest.approx(
        {"semantic": math.exp(-0.5), "instance": 0.5 * math.exp(1.0), "depth": 0.5 * math.exp(-2)}
    )
    assert weighting.sigma() == pytest.approx(
        {"semantic": math.exp(0.25), "instance": math.exp(-0.5), "depth": math.exp(1.0)}
    )
    assert weighting.log_variance() == LOG_VARIANCE  # the learned s_i themselves


def test_uncertainty_gradient_on_log_variance_matches_hand_derivative() -> None:
    weighting = build_weighting("uncertainty", initial_log_variance=LOG_VARIANCE)
    total, _ = weighting(_tensors(LOSSES))
    total.backward()
    for task, c in (("semantic", 1.0), ("instance", 0.5), ("depth", 0.5)):
        s = LOG_VARIANCE[task]
        grad = weighting.get_parameter(f"task_log_variance.{task}").grad
        assert grad is not None
        assert grad.item() == pytest.approx(-c * math.exp(-s) * LOSSES[task] + 0.5, rel=1e-6)


def test_one_sgd_step_raises_sigma_for_a_large_loss_and_lowers_it_for_a_tiny_one() -> None:
    weighting = build_weighting("uncertainty")
    before = weighting.sigma()
    optimizer = torch.optim.SGD(weighting.parameter_groups(lr=0.1))
    total, _ = weighting(_tensors({"semantic": 10.0, "instance": 5.0, "depth": 0.01}))
    total.backward()
    optimizer.step()
    after = weighting.sigma()
    assert after["semantic"] > before["semantic"]
    assert after["instance"] > before["instance"]
    assert after["depth"] < before["depth"]


def test_log_variances_converge_to_the_likelihood_optimum_under_an_optimizer() -> None:
    # With constant losses Eq. 10 is minimised at c · exp(-s) · L = 1/2, i.e.
    # σ² = 2 c L: σ² = L for regression, 2 L for classification.
    weighting = build_weighting("uncertainty", initial_log_variance=3.0)
    [group] = weighting.parameter_groups(lr=0.05)
    assert group["weight_decay"] == 0.0 and len(group["params"]) == 3
    optimizer = torch.optim.Adam([group])
    losses = _tensors({"semantic": 0.8, "instance": 4.0, "depth": 0.05})
    for _ in range(600):
        optimizer.zero_grad()
        total, _ = weighting(losses)
        total.backward()
        optimizer.step()
    sigma_squared = {t: s**2 for t, s in weighting.sigma().items()}
    assert sigma_squared == pytest.approx({"semantic": 1.6, "instance": 4.0, "depth": 0.05}, rel=0.02)


def test_uncertainty_with_a_task_subset_ignores_other_losses() -> None:
    weighting = build_weighting("uncertainty", tasks=("depth", "semantic"))
    assert weighting.tasks == ("semantic", "depth")
    assert len(list(weighting.parameters())) == 2
    losses = _tensors({"semantic": 1.0, "instance": math.nan, "depth": 2.0})
    total, weights = weighting(losses)
    assert total.item() == pytest.approx(1.0 + 0.5 * 2.0)
    assert set(weights) == set(weighting.sigma()) == {"semantic", "depth"}


def test_missing_task_loss_is_reported_by_name() -> None:
    weighting = build_weighting("uncertainty")
    with pytest.raises(KeyError, match="depth"):
        weighting(_tensors({"semantic": 1.0, "instance": 1.0}))


# --- uncertainty_log1p (Liebel & Körner) ---------------------------------------------


def test_uncertainty_log1p_total_by_hand_and_never_negative() -> None:
    weighting = build_weighting("uncertainty_log1p", initial_log_variance=LOG_VARIANCE)
    total, weights = weighting(_tensors(LOSSES))
    expected = sum(
        c * math.exp(-LOG_VARIANCE[t]) * LOSSES[t] + math.log(1 + math.exp(LOG_VARIANCE[t]))
        for t, c in (("semantic", 1.0), ("instance", 0.5), ("depth", 0.5))
    )
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert weights["instance"] == pytest.approx(0.5 * math.exp(1.0))

    # Eq. 10 goes negative for small losses and small σ; this variant cannot.
    small = _tensors({t: 1e-4 for t in TASKS})
    assert build_weighting("uncertainty", initial_log_variance=-4.0)(small)[0].item() < 0
    assert build_weighting("uncertainty_log1p", initial_log_variance=-4.0)(small)[0].item() > 0


# --- fixed ---------------------------------------------------------------------------


def test_fixed_weights_total_by_hand() -> None:
    weighting = build_weighting("fixed", weights={"semantic": 0.89, "instance": 0.01, "depth": 0.1})
    total, weights = weighting(_tensors(LOSSES))
    assert total.item() == pytest.approx(0.89 * 2.0 + 0.01 * 3.0 + 0.1 * 0.25)
    assert weights == pytest.approx({"semantic": 0.89, "instance": 0.01, "depth": 0.1})
    # Equivalent σ of Eq. 10: w = c / σ², so s = log σ² = log(c / w).
    assert weighting.sigma()["depth"] == pytest.approx(math.sqrt(0.5 / 0.1))
    assert weighting.log_variance()["semantic"] == pytest.approx(math.log(1.0 / 0.89))
    assert list(weighting.parameters()) == []
    assert weighting.parameter_groups(lr=0.1) == []


def test_fixed_zero_weight_task_with_nan_loss_leaves_total_finite_and_head_untouched() -> None:
    weighting = build_weighting("fixed", weights={"semantic": 1.0, "instance": 0.0, "depth": 0.0})
    semantic_head = torch.tensor(2.0, requires_grad=True)
    instance_head = torch.tensor(1.0, requires_grad=True)
    losses = {
        "semantic": semantic_head * 1.5,
        "instance": instance_head * math.nan,
        "depth": torch.tensor(math.inf),
    }
    total, weights = weighting(losses)
    total.backward()
    assert total.item() == pytest.approx(3.0)
    assert set(weights) == {"semantic"}
    assert instance_head.grad is None


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"semantic": -1.0}, "must be finite and >= 0"),
        ({"semantic": math.nan}, "must be finite and >= 0"),
        ({"semantic": 0.0, "depth": 0.0}, "all task weights are zero"),
        ({"segmentation": 1.0}, "valid tasks"),
    ],
)
def test_fixed_rejects_bad_weights(weights: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_weighting("fixed", weights=weights)


# --- dwa (Liu et al.) ----------------------------------------------------------------


def test_dwa_weights_are_one_for_two_windows_then_follow_the_loss_ratio() -> None:
    weighting = build_weighting("dwa", window=2, temperature=2.0)
    window_1 = [{"semantic": 1.0, "instance": 4.0, "depth": 2.0}] * 2
    window_2 = [
        {"semantic": 0.4, "instance": 4.0, "depth": 3.0},
        {"semantic": 0.6, "instance": 4.0, "depth": 3.0},
    ]
    for losses in window_1 + window_2:
        _, weights = weighting(_tensors(losses))
        assert weights == pytest.approx({t: 1.0 for t in TASKS})

    # Window means: (1, 4, 2) then (0.5, 4, 3) -> rates (0.5, 1.0, 1.5).
    exps = {t: math.exp(r / 2.0) for t, r in (("semantic", 0.5), ("instance", 1.0), ("depth", 1.5))}
    expected = {t: 3 * e / sum(exps.values()) for t, e in exps.items()}
    total, weights = weighting(_tensors(LOSSES))
    assert weights == pytest.approx(expected, rel=1e-6)
    assert total.item() == pytest.approx(sum(expected[t] * LOSSES[t] for t in TASKS), rel=1e-6)
    # The task whose loss fell fastest gets the smallest weight.
    assert min(weights, key=weights.__getitem__) == "semantic"


def test_dwa_does_not_learn_in_eval_mode_or_from_nan_and_resumes_from_state_dict() -> None:
    weighting = build_weighting("dwa", window=1)
    assert isinstance(weighting, DynamicWeightAverage)
    weighting.eval()
    for _ in range(3):
        weighting(_tensors(LOSSES))
    weighting.train()
    weighting(_tensors({"semantic": math.nan, "instance": 1.0, "depth": 1.0}))
    assert weighting.completed_windows == 0

    weighting(_tensors({"semantic": 1.0, "instance": 1.0, "depth": 1.0}))
    weighting(_tensors({"semantic": 2.0, "instance": 1.0, "depth": 1.0}))
    resumed = build_weighting("dwa", window=1)
    resumed.load_state_dict(weighting.state_dict())
    assert isinstance(resumed, DynamicWeightAverage)
    assert resumed.completed_windows == 2
    assert resumed.sigma() == pytest.approx(weighting.sigma())
    assert list(resumed.parameters()) == []


# --- factory and finiteness check ----------------------------------------------------


def test_unknown_strategy_error_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown loss weighting 'kendall'") as info:
        build_weighting("kendall")
    for name in ("uncertainty", "uncertainty_log1p", "fixed", "dwa"):
        assert name in str(info.value)


def test_wrong_option_error_lists_accepted_options() -> None:
    with pytest.raises(ValueError, match="accepted options: tasks, initial_log_variance"):
        build_weighting("uncertainty", weights={"semantic": 1.0})


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_every_strategy_gives_a_finite_total_and_sigma_per_task(name: str) -> None:
    options = {"weights": {t: 1 / 3 for t in TASKS}} if name == "fixed" else {}
    weighting = build_weighting(name, **options)
    total, weights = weighting(_tensors(LOSSES))
    assert math.isfinite(total.item())
    assert set(weights) == set(weighting.sigma()) == set(TASKS)
    learns = isinstance(weighting, UncertaintyWeighting)
    assert bool(list(weighting.parameters())) == learns
    # What the model card's `learned` is taken from.
    assert WEIGHTINGS[name].learned is learns


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_every_strategy_is_built_from_its_loss_config(name: str) -> None:
    config = LossConfig(strategy=name, tasks=["semantic", "depth"], weights={"semantic": 0.5, "depth": 0.5})
    weighting = build_weighting_from_config(config)
    assert type(weighting) is WEIGHTINGS[name] and weighting.tasks == ("semantic", "depth")


def test_an_unknown_configured_strategy_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"loss\.strategy: unknown loss weighting 'kendall'"):
        build_weighting_from_config(LossConfig(strategy="kendall"))


def test_check_finite_names_the_task_and_step() -> None:
    check_finite(_tensors(LOSSES), step=3)
    with pytest.raises(NonFiniteLossError, match=r"step 17.*depth = nan") as info:
        check_finite(_tensors({"semantic": 1.0, "instance": 2.0, "depth": math.nan}), step=17)
    assert isinstance(info.value, RuntimeError)
    assert "semantic" not in str(info.value)


# --- missing labels -------------------------------------------------------------------


def test_unlabelled_task_drops_out_of_the_total_with_its_regulariser() -> None:
    weighting = build_weighting("uncertainty", initial_log_variance=LOG_VARIANCE)
    labelled = {"semantic": torch.tensor(True), "instance": torch.tensor(False), "depth": torch.tensor(True)}
    # The instance loss of an unlabelled batch is an exact 0 (training.losses).
    losses = _tensors(LOSSES | {"instance": 0.0})
    total, _ = weighting(losses, labelled)
    # Semantic and depth terms only: no instance data term and no s_instance / 2.
    expected = 1.0 * math.exp(-0.5) * 2.0 + 0.5 / 2 + 0.5 * math.exp(-2.0) * 0.25 + 2.0 / 2
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    assert weighting.get_parameter("task_log_variance.instance").grad.item() == 0.0  # type: ignore[union-attr]
    depth_grad = weighting.get_parameter("task_log_variance.depth").grad
    assert depth_grad is not None
    assert depth_grad.item() == pytest.approx(-0.5 * math.exp(-2.0) * 0.25 + 0.5, rel=1e-6)


def test_sigma_of_a_task_never_labelled_stays_put_under_training() -> None:
    weighting = build_weighting("uncertainty")
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.1, momentum=0.9)
    labelled = {"semantic": torch.tensor(True), "instance": torch.tensor(True), "depth": torch.tensor(False)}
    for _ in range(50):
        total, _ = weighting(_tensors({"semantic": 0.2, "instance": 4.0, "depth": 0.0}), labelled)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    # Without the rule, s_depth / 2 alone would have pushed σ_depth down step after step.
    assert weighting.sigma()["depth"] == 1.0
    assert weighting.sigma()["semantic"] < 0.9 and weighting.sigma()["instance"] > 1.1


def test_all_labelled_flags_match_the_plain_total() -> None:
    weighting = build_weighting("uncertainty", initial_log_variance=LOG_VARIANCE)
    every = {task: torch.tensor(True) for task in TASKS}
    assert weighting(_tensors(LOSSES), every)[0].item() == weighting(_tensors(LOSSES))[0].item()


def test_dwa_does_not_average_a_step_with_an_unlabelled_task() -> None:
    dwa = DynamicWeightAverage(window=1)
    labelled = {"semantic": torch.tensor(True), "instance": torch.tensor(False), "depth": torch.tensor(True)}
    for _ in range(3):
        dwa(_tensors({"semantic": 1.0, "instance": 0.0, "depth": 1.0}), labelled)
    assert dwa.completed_windows == 0
