"""docs/rl.md §10 items 8 and 9: PBRS telescopes on the runtime reward, and reward sanity.

Episodes are driven through the real pure lifecycle (record / rollback → masks → apply_action) with random
measurements, actions biased towards culls and fossilizations, and one forced governor rollback; every
step's reward is packed from the stored snapshots x_{t−1}, x_t by `reward_inputs` and computed by `reward`.
"""

import math

import attrs
import torch
from hypothesis import event, example, given
from hypothesis import strategies as st
from profiles import scaled

from esper.core import lifecycle
from esper.core.actions import FactoredAction, Op
from esper.core.legality import masks
from esper.core.measurements import EpochMeasurements, SlotMeasurement
from esper.core.rewards import (
    RewardInputs,
    discounted_prefix,
    pbrs_sum,
    reward,
    reward_bound,
    reward_inputs,
    stack_inputs,
)
from esper.core.rl_config import REWARD_MODES, RLConfig
from esper.core.stages import Stage
from esper.testing import strategies as es

MODES = REWARD_MODES
CONFIGS = {mode: RLConfig(reward_mode=mode) for mode in MODES}
GAMMA = CONFIGS["shaped"].gamma
POTENTIALS = torch.tensor(CONFIGS["shaped"].potentials, dtype=torch.float64)
F64 = torch.float64


# --- synthetic episodes through the real lifecycle ---------------------------------------------


@attrs.frozen
class Episode:
    steps: tuple[RewardInputs, ...]
    phi_after: tuple[float, ...]  # Φ(x_t) recomputed from the lifecycle states, not from the inputs
    n_valid: int  # T_v: steps [0, T_v) are kept
    terminal: bool
    rollback_at: int
    threshold: float


@st.composite
def _biased_action(draw: st.DrawFn, view, rules) -> FactoredAction:
    """A legal action: FOSSILIZE whenever the masks offer it, else sometimes CULL, else mostly GERMINATE."""
    allowed = masks(view, rules).allowed_actions()
    dice = draw(st.integers(0, 9))
    for op, chance in ((Op.FOSSILIZE, 10), (Op.CULL, 2), (Op.GERMINATE, 9)):
        candidates = [a for a in allowed if a.op == op]
        if candidates and dice < chance:
            return draw(st.sampled_from(candidates))
    return FactoredAction.wait()


@st.composite
def _measurements(draw: st.DrawFn, state) -> EpochMeasurements:
    """Mostly healthy seeds (so runs reach PROBATIONARY and FOSSILIZED), sometimes anything."""
    if draw(st.integers(0, 3)) == 0:
        return draw(es.epoch_measurements(state))
    healthy = st.tuples(st.floats(0.01, 0.3), st.floats(0.005, 0.3), st.floats(0.05, 10.0))
    slots = []
    for slot in state.slots:
        if slot.seed is not None:
            c, g, r = draw(healthy)
            slots.append(SlotMeasurement(slot_id=slot.slot_id, contribution=c, shadow_gain=g, grad_ratio=r))
    return EpochMeasurements(epoch=state.epoch + 1, val_acc=draw(st.floats(0.0, 1.0)), slots=tuple(slots))


def _seed_params(state) -> list[int]:
    return [s.seed.n_params if s.seed is not None and s.seed.has_module else 0 for s in state.slots]


@st.composite
def episodes(draw: st.DrawFn) -> Episode:
    rules, state = draw(es.rules_and_state())
    if draw(st.booleans()):  # lift the seed caps half the time, so more seeds live to fossilize
        rules = attrs.evolve(rules, config=attrs.evolve(rules.config, max_seeds=0, max_seed_params=0))
    n_steps = draw(st.integers(2, 20))
    rollback_at = draw(st.integers(1, n_steps - 1))
    snapshot_after = draw(st.integers(-1, rollback_at - 1))  # -1: the fresh state x_{-1}
    terminal = draw(st.booleans())
    n_valid = n_steps if terminal else draw(st.integers(0, n_steps))
    host_params = draw(st.integers(1_000, 2_000_000))
    snapshot, steps, phis = state, [], []
    for t in range(n_steps):
        before = state
        m = draw(_measurements(state))
        if t == rollback_at:
            view, _ = lifecycle.rollback(snapshot, state, m, rules)
        else:
            view = lifecycle.record(state, m)
        action = draw(_biased_action(view, rules))
        state, _ = lifecycle.apply_action(view, action, rules)
        culled_age = view.slots[action.slot].seed.age if action.op == Op.CULL else 0
        steps.append(reward_inputs(
            before, state, acc=m.val_acc, op=int(action.op), slot=action.slot,
            terminal=terminal and t == n_steps - 1, rolled_back=t == rollback_at, host_params=host_params,
            seed_params_before=_seed_params(before), culled_age=culled_age, dtype=F64,
        ))
        phis.append(sum(CONFIGS["shaped"].potential(s.stage) for s in state.slots))
        if t == snapshot_after:
            snapshot = state
        for op in (Op.CULL, Op.FOSSILIZE):
            if action.op == op:
                event(f"action {op.name}")
    for stage in sorted({int(code) for x in steps for code in x.stage_after}):
        event(f"reached {Stage(stage).name}")
    return Episode(tuple(steps), tuple(phis), n_valid, terminal, rollback_at, rules.config.min_fossilize_contribution)


@given(episodes())
def test_pbrs_telescopes_on_the_runtime_reward(ep: Episode):
    shaped = [reward(x, CONFIGS["shaped"], ep.threshold) for x in ep.steps]
    # The stored snapshots chain: step t's x_{t-1} is step t-1's x_t (x_{-1} all DORMANT).
    for prev, cur in zip(ep.steps, ep.steps[1:], strict=False):
        assert torch.equal(prev.stage_after, cur.stage_before)
    assert int(ep.steps[0].stage_before.sum()) == 0
    # A rollback step measures nothing (§7.1).
    assert float(ep.steps[ep.rollback_at].measured.sum()) == 0.0

    t_v = ep.n_valid
    expected = 0.0 if ep.terminal or t_v == 0 else GAMMA**t_v * ep.phi_after[t_v - 1]
    from_components = sum(GAMMA**t * float(r.pbrs) for t, r in enumerate(shaped[:t_v]))
    stacked = stack_inputs(ep.steps)
    valid = (torch.arange(len(ep.steps)) < t_v).to(F64)
    from_snapshots = pbrs_sum(stacked.stage_before, stacked.stage_after, valid, stacked.terminal, POTENTIALS, GAMMA)
    assert math.isclose(from_components, expected, rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(float(from_snapshots), expected, rel_tol=1e-12, abs_tol=1e-12)


@scaled(0.5)
@given(episodes())
def test_runtime_rewards_are_bounded_and_sum_their_components(ep: Episode):
    n_slots = ep.steps[0].stage_before.shape[0]
    for mode in MODES:
        for t, x in enumerate(ep.steps):
            r = reward(x, CONFIGS[mode], ep.threshold)
            parts = r.contribution + r.pbrs + r.rent + r.terminal + r.governor + r.early_cull
            assert torch.equal(parts, r.total)
            assert abs(float(r.total)) <= reward_bound(mode, n_slots)
            if mode != "shaped" and float(x.terminal) == 0.0:
                assert float(r.terminal) == 0.0  # sparse/minimal pay nothing before the last step
            if t == ep.rollback_at:
                assert float(r.governor) == -CONFIGS[mode].governor_penalty


# --- sanity on arbitrary inputs ------------------------------------------------------------------


@st.composite
def random_inputs(draw: st.DrawFn, n_slots: int | None = None) -> RewardInputs:
    n = n_slots or draw(st.integers(1, 4))

    def floats(lo: float, hi: float, size: int | None = None) -> torch.Tensor:
        strategy = st.floats(lo, hi, allow_nan=False)
        value = draw(strategy) if size is None else draw(st.lists(strategy, min_size=size, max_size=size))
        return torch.tensor(value, dtype=F64)

    def ints(lo: int, hi: int, size: int | None = None) -> torch.Tensor:
        strategy = st.integers(lo, hi)
        value = draw(strategy) if size is None else draw(st.lists(strategy, min_size=size, max_size=size))
        return torch.tensor(value, dtype=torch.int64)

    return RewardInputs(
        stage_before=ints(0, len(Stage) - 1, n), stage_after=ints(0, len(Stage) - 1, n),
        contribution=floats(-1.0, 1.0, n), measured=ints(0, 1, n).to(F64),
        acc_at_germination=floats(0.0, 1.0, n), last_contribution=floats(-1.0, 1.0, n),
        seed_params_before=ints(0, 50_000_000, n).to(F64), host_params=ints(1, 50_000_000).to(F64),
        acc=floats(0.0, 1.0), op=ints(0, 3), slot=ints(0, n - 1), culled_age=ints(0, 20).to(F64),
        terminal=ints(0, 1).to(F64), rolled_back=ints(0, 1).to(F64),
    )


@given(random_inputs(), st.floats(0.0, 0.2))
def test_components_stay_within_their_caps(x: RewardInputs, threshold: float):
    cfg, n = CONFIGS["shaped"], x.stage_before.shape[0]
    r = reward(x, cfg, threshold)
    assert torch.equal(r.contribution + r.pbrs + r.rent + r.terminal + r.governor + r.early_cull, r.total)
    assert abs(float(r.contribution)) <= cfg.contribution_total_cap
    assert -cfg.rent_cap <= float(r.rent) <= 0.0
    assert abs(float(r.pbrs)) <= max(cfg.potentials) * n + 1e-12
    assert 0.0 <= float(r.terminal) <= cfg.terminal_acc_weight + cfg.terminal_fossil_weight * n
    assert float(r.governor) in (0.0, -cfg.governor_penalty)
    assert float(r.early_cull) == 0.0
    for mode in MODES:
        total = float(reward(x, CONFIGS[mode], threshold).total)
        assert abs(total) <= reward_bound(mode, n)


@given(random_inputs(), st.lists(st.integers(0, 5_000_000), min_size=4, max_size=4))
def test_rent_is_monotone_in_params_and_zero_without_seeds(x: RewardInputs, extra: list[int]):
    cfg = CONFIGS["shaped"]
    n = x.seed_params_before.shape[0]
    more = attrs.evolve(x, seed_params_before=x.seed_params_before + torch.tensor(extra[:n], dtype=F64))
    assert float(reward(more, cfg, 0.01).rent) <= float(reward(x, cfg, 0.01).rent)
    bigger_host = attrs.evolve(x, host_params=x.host_params * 2)
    assert float(reward(bigger_host, cfg, 0.01).rent) >= float(reward(x, cfg, 0.01).rent)
    empty = attrs.evolve(x, seed_params_before=torch.zeros_like(x.seed_params_before))
    assert float(reward(empty, cfg, 0.01).rent) == 0.0


@given(random_inputs(), st.data())
def test_an_unmeasured_slot_contributes_nothing(x: RewardInputs, data):
    n = x.stage_before.shape[0]
    s = data.draw(st.integers(0, n - 1))
    unmeasured = attrs.evolve(x, measured=x.measured.index_fill(0, torch.tensor([s]), 0.0))
    c = data.draw(st.floats(-1.0, 1.0))
    g = data.draw(st.floats(0.0, 1.0))
    changed = attrs.evolve(unmeasured, contribution=unmeasured.contribution.index_fill(0, torch.tensor([s]), c),
                           acc_at_germination=unmeasured.acc_at_germination.index_fill(0, torch.tensor([s]), g))
    cfg = CONFIGS["shaped"]
    assert float(reward(changed, cfg, 0.01).contribution) == float(reward(unmeasured, cfg, 0.01).contribution)
    nothing = attrs.evolve(x, measured=torch.zeros_like(x.measured))
    assert float(reward(nothing, cfg, 0.01).contribution) == 0.0


@given(random_inputs())
def test_sparse_and_minimal_pay_nothing_before_the_last_step(x: RewardInputs):
    calm = attrs.evolve(x, terminal=torch.zeros_like(x.terminal), rolled_back=torch.zeros_like(x.rolled_back))
    assert float(reward(calm, CONFIGS["sparse"], 0.01).total) == 0.0
    minimal = reward(calm, CONFIGS["minimal"], 0.01)
    assert float(minimal.total) == float(minimal.early_cull)


@given(random_inputs())
def test_minimal_penalises_only_young_culls(x: RewardInputs):
    cfg = CONFIGS["minimal"]
    young = int(x.op) == Op.CULL and float(x.culled_age) < cfg.early_cull_age
    r = reward(x, cfg, 0.01)
    assert float(r.early_cull) == (-cfg.early_cull_penalty if young else 0.0)
    sparse = reward(x, CONFIGS["sparse"], 0.01)
    assert float(r.total) == float(sparse.total + r.early_cull)


@given(st.lists(random_inputs(n_slots=3), min_size=2, max_size=6), st.sampled_from(MODES))
def test_normalisation_by_the_return_scale_keeps_signs_and_ratios(xs: list[RewardInputs], mode: str):
    """§7.5: dividing a batch's rewards by one positive scale (never subtracting) keeps signs and ratios."""
    cfg = CONFIGS[mode]
    rewards = torch.stack([reward(x, cfg, 0.01).total for x in xs])
    returns = discounted_prefix(rewards, torch.ones_like(rewards), cfg.gamma)
    std = returns.std(correction=0) if len(xs) > 1 else returns.new_tensor(0.0)
    scale = 1.0 / torch.clamp(std, min=cfg.reward_std_floor)
    normed = rewards * scale
    assert torch.equal(torch.sign(normed), torch.sign(rewards))
    for i in range(len(xs)):
        for j in range(len(xs)):
            if float(rewards[j]) != 0.0 and float(normed[j]) != 0.0:
                ratio, normed_ratio = float(rewards[i] / rewards[j]), float(normed[i] / normed[j])
                assert math.isclose(ratio, normed_ratio, rel_tol=1e-9, abs_tol=1e-12)
    # The discounted PBRS sum scales with the rewards, so telescoping survives normalisation.
    pbrs = torch.stack([reward(x, CONFIGS["shaped"], 0.01).pbrs for x in xs])
    discounts = GAMMA ** torch.arange(len(xs), dtype=F64)
    stacked = stack_inputs(xs)
    recomputed = pbrs_sum(stacked.stage_before, stacked.stage_after, torch.ones(len(xs)), stacked.terminal,
                          POTENTIALS, GAMMA)
    assert torch.allclose((discounts * pbrs * scale).sum(), recomputed * scale, rtol=1e-12, atol=1e-12)


def _quiet_inputs() -> RewardInputs:
    """One DORMANT slot, nothing measured, no terminal and no rollback: only early_cull can pay."""
    zero, ints = torch.zeros(1, dtype=F64), torch.zeros(1, dtype=torch.int64)
    return RewardInputs(stage_before=ints, stage_after=ints, contribution=zero, measured=zero,
                        acc_at_germination=zero, last_contribution=zero, seed_params_before=zero,
                        host_params=torch.tensor(1000.0, dtype=F64), acc=torch.tensor(0.5, dtype=F64),
                        op=torch.tensor(0), slot=torch.tensor(0), culled_age=torch.tensor(0.0, dtype=F64),
                        terminal=torch.tensor(0.0, dtype=F64), rolled_back=torch.tensor(0.0, dtype=F64))


@given(random_inputs(), st.sampled_from([Op.CULL, Op.CULL, *Op]), st.integers(0, 8),
       st.one_of(st.sampled_from([-1, 0, 1]), st.just(0), st.integers(-8, 8)))
@example(_quiet_inputs(), Op.CULL, 0, -1)  # shrunk: `<=` penalised a cull at age 0 with a_cull = 0
@example(_quiet_inputs(), Op.CULL, RLConfig().early_cull_age, 0)  # the default a_cull = 5, at age 5
def test_early_cull_penalty_stops_exactly_at_the_age_limit(x: RewardInputs, op: Op, limit: int, offset: int):
    """Minimal mode's early_cull = −p_cull · [op = CULL ∧ culled_age < a_cull] (docs/rl.md §7), with the age
    drawn mostly at the limit and one either side: at age = a_cull the cull is no longer early."""
    cfg = attrs.evolve(CONFIGS["minimal"], early_cull_age=limit)
    age = max(0, limit + offset)
    x = attrs.evolve(x, op=torch.tensor(int(op)), culled_age=torch.tensor(float(age), dtype=F64))
    young = op == Op.CULL and age < limit
    assert float(reward(x, cfg, 0.01).early_cull) == (-cfg.early_cull_penalty if young else 0.0), (op, age, limit)
