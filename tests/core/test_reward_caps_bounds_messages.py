"""Reward clamps and bounds past their edges, `reward_bound` under a non-default config, the packer's record of
a fresh step, and the messages of the errors a user reads (what surviving `make mutate` mutants of
esper.core.rewards changed unnoticed: the other tests stay inside the default config and assert error types)."""

import math
import re

import pytest
import torch
from lifecycle_helpers import fresh, make_rules, measure
from reward_helpers import calm_inputs as _inputs

from esper.core import lifecycle
from esper.core.actions import FactoredAction, Op
from esper.core.rewards import (
    MISSING_CONTRIBUTION,
    bounded_attribution,
    reward,
    reward_bound,
    reward_inputs,
)
from esper.core.rl_config import RLConfig
from esper.core.seed import LifecycleState
from esper.core.stages import Stage

F64 = torch.float64
THETA = 0.01
D, P, F = Stage.DORMANT, Stage.PROBATIONARY, Stage.FOSSILIZED


def test_a_harmful_slots_claim_is_capped_below_at_minus_the_contribution_cap() -> None:
    # ĉ = c = −0.2 (c ≤ g = 0.9) → clamp to −c_cap = −0.05 → w_c · −0.05 = −0.5, inside the total cap of 1.
    x = _inputs(1, contribution=[-0.2], measured=[1.0], acc=0.9)
    assert float(reward(x, RLConfig(), THETA).contribution) == pytest.approx(-0.5, abs=1e-12)


def test_a_claim_equal_to_the_gain_is_kept_bit_for_bit_in_float32() -> None:
    # ĉ = c for c ≤ g, the boundary included. Recomputing it there as sqrt(c · g) = sqrt(c²) is not the
    # identity in float32 on torch's CPU kernels (1 ulp off for some values), and float32 is what the shell packs.
    acc = torch.rand(1_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    claim = acc[:, None].clone()  # g = acc − 0 = c exactly
    kept = bounded_attribution(claim, acc, torch.zeros_like(claim))
    assert kept.dtype == torch.float32 and torch.equal(kept, claim)


def test_the_sparse_score_is_clamped_at_plus_one_when_the_config_pays_for_parameters() -> None:
    # A negative sparse_param_weight is a legal config: score = 0.9 + 0.1 · 1e6 / 5e5 = 1.1 → 1.
    x = _inputs(seed_params_before=[1e6, 0.0, 0.0], acc=0.9, terminal=1.0)
    for mode in ("sparse", "minimal"):
        cfg = RLConfig(reward_mode=mode, sparse_param_weight=-0.1)
        total = float(reward(x, cfg, THETA).total)
        assert total == pytest.approx(1.0, abs=1e-12)
        assert abs(total) <= reward_bound(mode, 3, cfg)  # the bound collect_rollout enforces assumes the clamp


def test_rent_of_a_one_parameter_host_is_the_plain_ratio() -> None:
    # P_seeds / P_host = 1 / 1: the host-size guard (P_host ≥ 1) must not bite at a legal count.
    x = _inputs(seed_params_before=[1.0, 0.0, 0.0], host_params=1.0)
    assert float(reward(x, RLConfig(), THETA).rent) == pytest.approx(-0.05 * math.log(2.0), abs=1e-15)


def test_reward_bound_reads_the_given_config() -> None:
    # Potentials from −0.2 to 0.6: |γΦ(a) − Φ(b)| ≤ S · (0.6 + 0.2), reached by moving every slot from the
    # cheapest to the dearest stage.
    potentials = (-0.2, 0.1, 0.2, 0.35, 0.55, 0.6, 0.0, 0.0, -0.1)
    cfg = RLConfig(potentials=potentials, contribution_total_cap=2.0, rent_cap=0.3, terminal_acc_weight=-2.0,
                   terminal_fossil_weight=0.2, governor_penalty=0.5, early_cull_penalty=0.2)
    phi_span = 0.8
    assert reward_bound("shaped", 3, cfg) == pytest.approx(2.0 + phi_span * 3 + 0.3 + (2.0 + 0.2 * 3) + 0.5)
    assert reward_bound("sparse", 3, cfg) == pytest.approx(1.0 + 0.5 + 0.2)
    assert reward_bound("minimal", 3, cfg) == pytest.approx(1.7)
    climb = _inputs(stage_before=[D, D, D], stage_after=[F, F, F])
    pbrs = float(reward(climb, cfg, THETA).pbrs)
    assert pbrs == pytest.approx(cfg.gamma * 0.6 * 3 + 0.2 * 3)
    assert 0.6 * 3 < pbrs <= phi_span * 3  # the negative potential's share is needed to bound it


def test_reward_bound_names_the_known_modes() -> None:
    message = "unknown reward mode 'dense'; modes are ['minimal', 'shaped', 'sparse']"
    with pytest.raises(ValueError, match=re.escape(message)):
        reward_bound("dense", 3)


def _fresh_germination() -> tuple[LifecycleState, LifecycleState]:
    before = fresh()
    view = lifecycle.record(before, measure(before, val_acc=0.5))
    after, _ = lifecycle.apply_action(view, FactoredAction.germinate(0, 0, 0), make_rules())
    return before, after


def test_reward_inputs_of_a_fresh_germination_field_by_field() -> None:
    # The packed inputs go into the rollout record (rollout-*.npz) as they are, slots without a seed included.
    before, after = _fresh_germination()
    x = reward_inputs(before, after, acc=0.5, op=int(Op.GERMINATE), slot=0, terminal=False, rolled_back=False,
                      host_params=6_418, seed_params_before=[0, 0, 0], culled_age=0, dtype=F64)
    germinated = int(after.slots[0].stage)
    want = {"stage_before": [D, D, D], "stage_after": [germinated, D, D], "contribution": [0.0] * 3,
            "measured": [0.0] * 3, "acc_at_germination": [0.0] * 3, "last_contribution": [MISSING_CONTRIBUTION] * 3,
            "seed_params_before": [0.0] * 3, "host_params": 6_418.0, "acc": 0.5, "op": int(Op.GERMINATE),
            "slot": 0, "culled_age": 0.0, "terminal": 0.0, "rolled_back": 0.0}
    assert {name: getattr(x, name).tolist() for name in want} == want


def test_reward_inputs_errors_say_what_is_wrong() -> None:
    before, after = _fresh_germination()
    common = {"op": 0, "slot": 0, "terminal": False, "rolled_back": False, "host_params": 1, "culled_age": 0}
    counts = "slot counts differ: before 3, after 3, seed_params_before 2"
    with pytest.raises(ValueError, match=re.escape(counts)):
        reward_inputs(before, after, acc=0.5, seed_params_before=[0, 0], **common)
    with pytest.raises(ValueError, match=re.escape("acc must be finite, got nan")):
        reward_inputs(before, after, acc=math.nan, seed_params_before=[0, 0, 0], **common)
