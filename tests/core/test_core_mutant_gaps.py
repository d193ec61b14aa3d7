"""Examples for what `make mutate` found unchecked in the core's RL maths and blend/alpha/legality (see
benchmarks/results/mutation-*.md): each pins one behaviour that a surviving mutant changed."""

import math

import pytest
import torch
from lifecycle_helpers import fresh, make_rules, seed_state, slot_with, state_with

from esper.core.actions import FactoredAction, Op
from esper.core.alpha import Curve, alpha_curve
from esper.core.blend import knobs_for
from esper.core.errors import LifecycleError
from esper.core.gates import g2
from esper.core.legality import can_apply, masks
from esper.core.ppo import PPOBatch, PPOCoefs, ppo_loss
from esper.core.stages import Stage

F64 = torch.float64


def test_ppo_reports_the_mean_and_bessel_std_of_the_values() -> None:
    values = torch.tensor([[1.0, 0.0, 9.0]], dtype=F64)  # the third step is padding (valid 0)
    batch = PPOBatch(logp_old=torch.zeros(1, 3, 4, dtype=F64), value_old=values.clone(),
                     relevance=torch.ones(1, 3, 4, dtype=F64), valid=torch.tensor([[1.0, 1.0, 0.0]], dtype=F64),
                     advantages=torch.zeros(1, 3, dtype=F64), returns=torch.zeros(1, 3, dtype=F64))
    _, d = ppo_loss(torch.zeros(1, 3, 4, dtype=F64), torch.zeros(1, 3, 4, dtype=F64), values, batch,
                    PPOCoefs(clip_eps=0.2, value_clip_eps=0.2, value_coef=0.5, entropy_coef=0.0))
    assert d.value_mean.item() == pytest.approx(0.5, abs=1e-12)
    assert d.value_std.item() == pytest.approx(math.sqrt(0.5), abs=1e-12)  # ((½)² + (½)²) / (2 − 1)


def test_alpha_curve_is_flat_and_finite_far_outside_the_unit_interval() -> None:
    """The clamp before the curves keeps sinh/cosh finite: without it the unselected branch is inf/inf and its
    NaN leaks into the gradient through `where`."""
    codes = torch.tensor([int(c) for c in Curve])
    for outside, edge in ((-1e3, 0.0), (1e3, 1.0)):
        u = torch.full((len(codes),), outside, dtype=F64, requires_grad=True)
        got = alpha_curve(codes, u)
        torch.testing.assert_close(got, torch.full((len(codes),), edge, dtype=F64), rtol=0, atol=0)
        (grad,) = torch.autograd.grad(got.sum(), u)
        torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=0)


def test_a_stage_without_a_seed_module_names_itself() -> None:
    with pytest.raises(LifecycleError, match=r"^stage DORMANT has no seed module in the forward, hence no knobs$"):
        knobs_for(Stage.DORMANT)


def test_germinate_is_allowed_with_a_single_tempo_choice() -> None:
    rules = make_rules(tempo_choices=(5,), default_tempo=5)
    m = masks(fresh(), rules)
    assert len(m.tempo) == 1 and any(any(row) for row in m.blueprint)
    assert m.op[Op.GERMINATE]  # G0 is asked with tempo index 0, the only one there is


def test_g2_reports_its_slot_seed_values_and_thresholds() -> None:
    rules = make_rules()
    young = slot_with(seed_state(Stage.TRAINING, epochs_in_stage=0, grad_ratio=1.0, shadow_gain=1.0))
    result = g2(young, rules.config)
    assert (result.slot_id, result.seed_id, result.passed, result.reason) == ("early", "early#0", False, "too_young")
    cfg = rules.config
    assert [(c.name, c.value, c.threshold) for c in result.checks] == [
        ("epochs_in_stage", 0, cfg.min_training_epochs), ("grad_ratio", 1.0, cfg.min_grad_ratio),
        ("shadow_gain", 1.0, cfg.min_training_improvement)]


def test_a_refused_cull_names_the_seed_and_why() -> None:
    rules = make_rules()
    blending = state_with(seed_state(Stage.BLENDING, age=10))
    assert can_apply(blending, FactoredAction.cull(0), rules).seed_id == "early#0"
    culled = state_with(seed_state(Stage.CULLED))
    assert can_apply(culled, FactoredAction.cull(0), rules).reason == "wrong_stage"
    assert can_apply(fresh({"mid", "late"}), FactoredAction.cull(0), rules).reason == "slot_disabled"
