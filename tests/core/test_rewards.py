"""Rewards (docs/rl.md §7): hand examples, the packer, a scripted lifecycle episode, vmap == loop,
compiled (fullgraph) == eager, and the same functions on jax (jit, vmap) == torch after a DLPack round trip
(§10 items 5–9)."""

import math
from functools import partial

import attrs
import pytest
import torch
import torch.utils._pytree as torch_pytree
from lifecycle_helpers import fresh, make_rules, measure, seed_state, state_with
from reward_helpers import calm_inputs as _inputs
from reward_helpers import random_inputs as _random_inputs

from esper.core import lifecycle
from esper.core.actions import FactoredAction, Op
from esper.core.legality import masks
from esper.core.rewards import (
    MISSING_CONTRIBUTION,
    RewardComponents,
    RewardInputs,
    discounted_prefix,
    pbrs_sum,
    potential,
    reward,
    reward_bound,
    reward_inputs,
    reward_minimal,
    reward_shaped,
    reward_sparse,
    stack_inputs,
)
from esper.core.rl_config import REWARD_MODES, RLConfig
from esper.core.stages import Stage

MODES = REWARD_MODES
CFG = {mode: RLConfig(reward_mode=mode) for mode in MODES}
GAMMA = CFG["shaped"].gamma
THETA = 0.01
D, T, B, P, F = Stage.DORMANT, Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY, Stage.FOSSILIZED


def _shaped(x: RewardInputs) -> RewardComponents:
    return reward(x, CFG["shaped"], THETA)


# --- hand examples ---------------------------------------------------------------------------


def test_bounded_attribution_shrinks_claims_beyond_the_gain():
    # g = 0.6 − 0.59 = 0.01 < c = 0.04 → ĉ = sqrt(0.04 · 0.01) = 0.02 → 10 · 0.02
    big = _inputs(1, contribution=[0.04], measured=[1.0], acc_at_germination=[0.59], acc=0.6)
    assert float(_shaped(big).contribution) == pytest.approx(0.2, abs=1e-12)
    within = _inputs(1, contribution=[0.005], measured=[1.0], acc_at_germination=[0.59], acc=0.6)
    assert float(_shaped(within).contribution) == pytest.approx(0.05, abs=1e-12)
    harmful = _inputs(1, contribution=[-0.03], measured=[1.0], acc_at_germination=[0.7], acc=0.6)
    assert float(_shaped(harmful).contribution) == pytest.approx(-0.3, abs=1e-12)  # g = 0: c ≤ g kept


def test_contribution_is_capped_per_slot_and_in_total():
    one = _inputs(1, contribution=[0.2], measured=[1.0], acc=0.9)
    assert float(_shaped(one).contribution) == pytest.approx(0.5)  # ĉ clamped to c_cap = 0.05
    three = _inputs(3, contribution=[0.2] * 3, measured=[1.0] * 3, acc=0.9)
    assert float(_shaped(three).contribution) == pytest.approx(1.0)  # 1.5 clamped to the total cap
    worst = _inputs(3, contribution=[-0.5] * 3, measured=[1.0] * 3, acc=0.9)
    assert float(_shaped(worst).contribution) == pytest.approx(-1.0)


def test_terminal_bonus_counts_fossils_at_or_above_the_g5_threshold():
    x = _inputs(4, stage_after=[F, F, F, P], last_contribution=[0.02, 0.005, 0.01, 0.5], acc=0.7, terminal=1.0)
    assert float(_shaped(x).terminal) == pytest.approx(0.7 + 0.1 * 2)  # 0.01 counts, PROBATIONARY does not
    assert float(_shaped(attrs.evolve(x, terminal=torch.tensor(0.0, dtype=torch.float64))).terminal) == 0.0


def test_governor_penalty_in_every_mode():
    x = _inputs(rolled_back=1.0)
    for mode in MODES:
        r = reward(x, CFG[mode], THETA)
        assert float(r.governor) == -1.0
        assert float(r.total) == pytest.approx(-1.0 + float(r.pbrs + r.rent))


def test_rent_on_seeds_of_the_previous_state_fossils_included():
    x = _inputs(3, stage_before=[T, F, D], seed_params_before=[1_000.0, 500.0, 0.0], host_params=10_000.0)
    assert float(_shaped(x).rent) == pytest.approx(-0.05 * math.log(1.15), abs=1e-15)
    huge = attrs.evolve(x, seed_params_before=torch.tensor([1e12, 0.0, 0.0], dtype=torch.float64))
    assert float(_shaped(huge).rent) == -0.5


def test_pbrs_potential_difference_and_terminal_zero():
    x = _inputs(3, stage_before=[D, T, P], stage_after=[T, B, F])
    expected = GAMMA * (0.2 + 0.35 + 0.6) - (0.0 + 0.2 + 0.55)
    assert float(_shaped(x).pbrs) == pytest.approx(expected, abs=1e-12)
    last = attrs.evolve(x, terminal=torch.tensor(1.0, dtype=torch.float64))
    assert float(_shaped(last).pbrs) == pytest.approx(-0.75, abs=1e-12)
    potentials = torch.tensor(CFG["shaped"].potentials)
    assert float(potential(torch.tensor([6, 7, 8, 0]), potentials)) == 0.0  # cooling slots are worth 0


def test_sparse_and_minimal_hand_values():
    x = _inputs(3, seed_params_before=[250_000.0, 250_000.0, 0.0], acc=0.8, terminal=1.0)
    assert float(reward(x, CFG["sparse"], THETA).total) == pytest.approx(0.8 - 0.1)
    crushed = attrs.evolve(x, seed_params_before=torch.tensor([1e10, 0.0, 0.0], dtype=torch.float64))
    assert float(reward(crushed, CFG["sparse"], THETA).total) == -1.0
    for age, expected in ((4.0, -0.1), (5.0, 0.0), (0.0, -0.1)):
        cull = _inputs(op=int(Op.CULL), culled_age=age)
        assert float(reward(cull, CFG["minimal"], THETA).total) == pytest.approx(expected)
    assert float(reward(_inputs(op=int(Op.WAIT)), CFG["minimal"], THETA).total) == 0.0
    assert float(reward(_inputs(op=int(Op.CULL), culled_age=1.0), CFG["sparse"], THETA).total) == 0.0


def test_reward_dispatches_on_the_mode():
    x = _random_inputs(4, 3, seed=0, dtype=torch.float64)
    for mode, fn in (("shaped", reward_shaped), ("sparse", reward_sparse), ("minimal", reward_minimal)):
        assert torch.equal(reward(x, CFG[mode], THETA).total, fn(x, CFG[mode], THETA).total)


def test_reward_bound_values():
    assert reward_bound("shaped", 3) == pytest.approx(5.6)
    assert reward_bound("shaped", 1) == pytest.approx(1 + 0.6 + 0.5 + 1.1 + 1)
    assert reward_bound("sparse", 3) == pytest.approx(2.1)
    assert reward_bound("minimal", 5) == pytest.approx(2.1)  # 1 (clamped score) + 1 (governor) + 0.1 (early cull)
    worst = _inputs(op=int(Op.CULL), culled_age=0.0, rolled_back=1.0, terminal=1.0, acc=0.0,
                    seed_params_before=[1e12, 0.0, 0.0])
    assert abs(float(reward(worst, CFG["minimal"], THETA).total)) == pytest.approx(2.1)
    with pytest.raises(ValueError):
        reward_bound("dense", 3)


def test_discounted_prefix_and_pbrs_sum_by_hand():
    h = discounted_prefix(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0]), 0.5)
    assert h.tolist() == [1.0, 2.5, 0.0]
    batch = discounted_prefix(torch.ones(2, 3, 4), torch.ones(2, 3, 4), 1.0)  # leading dims pass through
    assert batch.shape == (2, 3, 4) and batch[1, 2].tolist() == [1.0, 2.0, 3.0, 4.0]
    phi = torch.tensor(CFG["shaped"].potentials, dtype=torch.float64)
    before = torch.tensor([[0, 0], [2, 0]])
    after = torch.tensor([[2, 0], [3, 2]])
    total = pbrs_sum(before, after, torch.ones(2), torch.tensor([0.0, 0.0]), phi, 0.9)
    assert float(total) == pytest.approx(0.9**2 * (0.35 + 0.2))  # γ^T Φ(x_{T−1})
    assert float(pbrs_sum(before, after, torch.ones(2), torch.tensor([0.0, 1.0]), phi, 0.9)) == pytest.approx(0.0)


# --- the packer --------------------------------------------------------------------------------


def test_reward_inputs_reads_this_epochs_measurements_from_the_snapshots():
    rules = make_rules()
    blending = seed_state(B, slot=0, acc_at_germination=0.4)
    fossil = seed_state(F, slot=1, seed_id="mid#1", acc_at_germination=0.3)
    training = seed_state(T, slot=2, seed_id="late#2")
    before = state_with(blending, fossil, training)
    m = measure(before, val_acc=0.6, early={"contribution": 0.03}, mid={"contribution": 0.02},
                late={"contribution": 0.5})
    after, _ = lifecycle.apply_action(lifecycle.record(before, m), FactoredAction.wait(), rules)
    x = reward_inputs(before, after, acc=0.6, op=0, slot=0, terminal=False, rolled_back=False,
                      host_params=6_418, seed_params_before=[10, 20, 30], culled_age=0)
    assert x.stage_before.tolist() == [B, F, T] and x.stage_before.dtype == torch.int64
    assert x.stage_after.tolist() == [s.stage for s in after.slots]
    assert x.measured.tolist() == [1.0, 1.0, 0.0]  # a TRAINING seed (α = 0) is never measured
    assert x.contribution.tolist() == pytest.approx([0.03, 0.02, 0.0])
    assert x.acc_at_germination.tolist() == pytest.approx([0.4, 0.3, 0.5])
    assert x.last_contribution.tolist() == pytest.approx([0.03, 0.02, 0.5])
    rolled = reward_inputs(before, after, acc=0.6, op=0, slot=0, terminal=False, rolled_back=True,
                           host_params=6_418, seed_params_before=[10, 20, 30], culled_age=0)
    assert rolled.measured.tolist() == [0.0, 0.0, 0.0] and float(rolled.rolled_back) == 1.0


def test_reward_inputs_for_a_fresh_germination_and_missing_values():
    rules = make_rules()
    before = fresh()
    view = lifecycle.record(before, measure(before, val_acc=0.5))
    after, _ = lifecycle.apply_action(view, FactoredAction.germinate(0, 0, 0), rules)
    x = reward_inputs(before, after, acc=0.5, op=int(Op.GERMINATE), slot=0, terminal=False, rolled_back=False,
                      host_params=6_418, seed_params_before=[0, 0, 0], culled_age=0, dtype=torch.float64)
    assert x.stage_before.tolist() == [D, D, D] and x.stage_after.tolist()[0] == int(after.slots[0].stage)
    assert x.measured.tolist() == [0.0, 0.0, 0.0] and x.contribution.dtype == torch.float64
    assert x.last_contribution.tolist() == [MISSING_CONTRIBUTION] * 3
    with pytest.raises(ValueError):
        reward_inputs(before, after, acc=0.5, op=0, slot=0, terminal=False, rolled_back=False,
                      host_params=1, seed_params_before=[0, 0], culled_age=0)


def test_stack_inputs_adds_a_leading_env_axis():
    stacked = stack_inputs([_inputs(), _inputs(acc=0.9)])
    assert stacked.stage_before.shape == (2, 3) and stacked.acc.tolist() == [0.5, 0.9]
    with pytest.raises(ValueError):
        stack_inputs([])


# --- a scripted episode through the real lifecycle ------------------------------------------------


def _policy(view, rules, culled_once: bool) -> FactoredAction:
    """Fossilize whatever may be; cull slot 1 the first time it may be; else germinate; else wait."""
    allowed = masks(view, rules).allowed_actions()
    for wanted in (lambda a: a.op == Op.FOSSILIZE, lambda a: a.op == Op.CULL and a.slot == 1 and not culled_once,
                   lambda a: a.op == Op.GERMINATE and a.tempo == 0):
        found = [a for a in allowed if wanted(a)]
        if found:
            return found[0]
    return FactoredAction.wait()


def _scripted_episode(n_steps: int = 25, rollback_at: int = 20, snapshot_after: int = 15) -> list[RewardInputs]:
    rules, state = make_rules(n_steps), fresh()
    snapshot, steps, culled_once = state, [], False
    for t in range(n_steps):
        before = state
        fossils = {s.slot_id: {"contribution": 0.02} for s in state.slots if s.stage == F}
        m = measure(state, val_acc=0.5 + 0.01 * t, **fossils)
        view = lifecycle.rollback(snapshot, state, m, rules)[0] if t == rollback_at else lifecycle.record(state, m)
        action = _policy(view, rules, culled_once)
        culled_once |= action.op == Op.CULL
        state, _ = lifecycle.apply_action(view, action, rules)
        steps.append(reward_inputs(
            before, state, acc=m.val_acc, op=int(action.op), slot=action.slot, terminal=t == n_steps - 1,
            rolled_back=t == rollback_at, host_params=6_418, dtype=torch.float64,
            seed_params_before=[s.seed.n_params if s.seed and s.seed.has_module else 0 for s in before.slots],
            culled_age=view.slots[action.slot].seed.age if action.op == Op.CULL else 0))
        snapshot = state if t == snapshot_after else snapshot
    return steps


def test_scripted_episode_culls_fossilizes_rolls_back_and_telescopes():
    steps = _scripted_episode()
    x = stack_inputs(steps)
    rewards = torch.func.vmap(partial(reward, cfg=CFG["shaped"], min_fossilize_contribution=THETA))(x)
    assert (x.stage_after == F).any() and (x.op == Op.CULL).any()
    rb = 20
    assert bool((x.stage_before[rb] != x.stage_after[rb]).any()) and float(x.measured[rb].sum()) == 0.0
    assert float(rewards.governor[rb]) == -1.0
    n_fossils = int((x.stage_after[-1] == F).sum())
    assert float(rewards.terminal[-1]) == pytest.approx(float(x.acc[-1]) + 0.1 * n_fossils) and n_fossils >= 1
    discounts = GAMMA ** torch.arange(len(steps), dtype=torch.float64)
    phi = torch.tensor(CFG["shaped"].potentials, dtype=torch.float64)
    assert float((discounts * rewards.pbrs).sum()) == pytest.approx(0.0, abs=1e-12)  # terminal: Σ γ^t F_t = 0
    cut = 18  # the same run cut after T_v = 18 valid steps: γ^{T_v} Φ(x_{T_v − 1})
    valid = (torch.arange(len(steps)) < cut).to(torch.float64)
    expected = GAMMA**cut * float(potential(x.stage_after[cut - 1], phi))
    assert float((valid * discounts * rewards.pbrs).sum()) == pytest.approx(expected, abs=1e-12)
    assert float(pbrs_sum(x.stage_before, x.stage_after, valid, x.terminal, phi, GAMMA)) == pytest.approx(expected)
    minimal = torch.func.vmap(partial(reward, cfg=CFG["minimal"], min_fossilize_contribution=THETA))(x)
    assert float(minimal.early_cull.sum()) == pytest.approx(-0.1)  # the one cull came at age < 5


# --- transforms: vmap, compile, JAX --------------------------------------------------------------


def _fns() -> dict[str, object]:
    return {mode: partial(reward, cfg=CFG[mode], min_fossilize_contribution=THETA) for mode in MODES}


def test_vmap_equals_loop():
    x = _random_inputs(6, 3, seed=1)
    for fn in _fns().values():
        batched = torch.func.vmap(fn)(x)
        for i in range(6):
            one = fn(torch_pytree.tree_map(lambda leaf, i=i: leaf[i], x))
            for name in attrs.fields_dict(RewardComponents):
                assert torch.equal(getattr(batched, name)[i], getattr(one, name)), name
    r, valid = torch.randn(4, 9), (torch.arange(9) < torch.tensor([[9], [5], [0], [7]])).float()
    batched = torch.func.vmap(partial(discounted_prefix, gamma=GAMMA))(r, valid)
    assert torch.equal(batched, torch.stack([discounted_prefix(r[i], valid[i], GAMMA) for i in range(4)]))


def test_compiled_fullgraph_equals_eager():
    fns = _fns()

    def everything(x: RewardInputs, r: torch.Tensor, valid: torch.Tensor):
        per_mode = tuple(torch.func.vmap(fns[mode])(x) for mode in MODES)
        return per_mode, torch.func.vmap(partial(discounted_prefix, gamma=GAMMA))(r, valid)

    x = _random_inputs(4, 3, seed=2)
    r, valid = torch.randn(4, 8), (torch.arange(8) < torch.tensor([[8], [3], [0], [6]])).float()
    (compiled_modes, compiled_h) = torch.compile(everything, fullgraph=True)(x, r, valid)
    eager_modes, eager_h = everything(x, r, valid)
    torch.testing.assert_close(compiled_h, eager_h, rtol=1e-6, atol=1e-6)
    for got, want in zip(compiled_modes, eager_modes, strict=True):
        assert isinstance(got, RewardComponents)
        for name in attrs.fields_dict(RewardComponents):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-6, atol=1e-6)


@pytest.fixture
def jax():
    jax = pytest.importorskip("jax")  # installed in CI through the `jax` extra
    with jax.enable_x64(True):  # compare in float64; scoped so other modules keep JAX's default
        yield jax


def test_the_same_rewards_on_jax_equal_torch_after_dlpack_round_trip(jax):
    edges = stack_inputs([  # the comparisons' boundaries: age 4 vs 5, last_contribution = θ, c = g
        _inputs(op=int(Op.CULL), culled_age=4.0), _inputs(op=int(Op.CULL), culled_age=5.0),
        _inputs(stage_after=[F, F, D], last_contribution=[THETA, 0.0, 0.0], terminal=1.0),
        _inputs(contribution=[0.25, 0.0, 0.0], measured=[1.0, 0.0, 0.0], acc_at_germination=[0.25, 0.0, 0.0]),
    ])
    for x in (_random_inputs(64, 3, seed=3, dtype=torch.float64), edges):
        jx = torch_pytree.tree_map(jax.dlpack.from_dlpack, x)
        assert jx.stage_before.dtype == jax.numpy.int64
        for mode in MODES:
            want = reward(x, CFG[mode], THETA)
            fn = partial(reward, cfg=CFG[mode], min_fossilize_contribution=THETA)
            for got in (fn(jx), jax.jit(jax.vmap(fn))(jx)):
                back = jax.tree_util.tree_map(torch.from_dlpack, got)
                assert isinstance(back, RewardComponents)
                for name in attrs.fields_dict(RewardComponents):
                    torch.testing.assert_close(getattr(back, name), getattr(want, name), rtol=1e-12, atol=1e-12)
    r = torch.randn(4, 11, dtype=torch.float64)
    valid = (torch.arange(11) < torch.tensor([[11], [4], [0], [9]])).to(torch.float64)
    got = jax.jit(partial(discounted_prefix, gamma=GAMMA))(jax.dlpack.from_dlpack(r), jax.dlpack.from_dlpack(valid))
    torch.testing.assert_close(torch.from_dlpack(got), discounted_prefix(r, valid, GAMMA), rtol=1e-12, atol=1e-12)
