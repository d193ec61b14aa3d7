"""Per-step rewards of the PPO controller (docs/rl.md §7): pure, vmappable over envs, compilable fullgraph.

Time index (rlax style). Step t (epoch t+1) moves the env from x_{t−1} to x_t (x_{−1}: every slot DORMANT).
`RewardInputs` of step t holds stage_before = stages of x_{t−1} (the structure trained and validated this
epoch), stage_after = stages of x_t (after rollback, action and mechanical transitions), this epoch's
measurements and the action a_t. State terms (contribution, rent) price x_{t−1}; action terms (PBRS,
early cull) land on step t itself; nothing is shifted.

Shaped (all constants are `RLConfig` fields; θ = G5's `min_fossilize_contribution`):

    g_s          = max(acc − acc_at_germination_s, 0)
    ĉ_s          = c_s if c_s ≤ g_s else sqrt(c_s · g_s)                        (bounded attribution)
    contribution = clamp(w_c · Σ_s measured_s · clamp(ĉ_s, −c_cap, c_cap), −C, C)
    pbrs   F_t   = γ · Φ(x_t) · (1 − terminal_t) − Φ(x_{t−1}),   Φ(x) = Σ_s φ(stage_s)
    rent         = −min(w_r · ln(1 + P_seeds(x_{t−1}) / P_host), rent_cap)
    terminal     = terminal_t · (w_acc · acc + w_f · #{s : stage_after_s = FOSSILIZED ∧ last_contribution_s ≥ θ})
    governor     = −p_gov · rolled_back_t

Sparse:   terminal = terminal_t · clamp(acc − w_p · P_seeds(x_{t−1}) / scale, −1, 1), governor as above.
Minimal:  sparse + early_cull,  early_cull = −p_cull · [op_t = CULL ∧ culled_age_t < a_cull].

Components are signed (rent, governor, early_cull ≤ 0) and `total` is their exact sum. Every function here
reduces over the last (slot) axis only, so it is shape-polymorphic over leading env dimensions too.

PBRS telescopes: Σ_{t<T} γ^t F_t = γ^T Φ(x_{T−1}) − Φ(x_{−1}) = γ^T Φ(x_{T−1}); 0 for a terminal episode
(Φ(x_{T−1}) := 0), γ^{T_v} Φ(x_{T_v−1}) for one cut after T_v valid steps.

Return normalisation (§7.5): H_t = valid_t · (r_t + γ · H_{t−1}), H_{−1} = 0.

The numerics (every function but the packing `reward_inputs`) are written once over the array namespace
(`esper.core.xp`): the same source runs on torch tensors (eager, torch.func.vmap, torch.compile(fullgraph=True))
and on jax arrays (jax.jit, jax.vmap); `RewardInputs` and `RewardComponents` are pytrees of either framework's
arrays (stage and op codes int64 on torch, int32 on jax unless x64 is enabled).
"""

import math
from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from esper.core.actions import Op
from esper.core.pytree import register_pytree, set_frozen_fields, tree_stack
from esper.core.rl_config import RLConfig
from esper.core.seed import LifecycleState, SlotState
from esper.core.stages import Stage
from esper.core.xp import Array, device, namespace

# Slots with α > 0 during validation: the ones whose counterfactual contribution is measured (§7.1).
MEASURED_STAGES = frozenset({Stage.BLENDING, Stage.PROBATIONARY, Stage.FOSSILIZED})
# `last_contribution` of a slot with no measured value: below every G5 threshold (θ ≥ 0), so it never counts.
MISSING_CONTRIBUTION = -1.0
# The spec's terminal bound assumes accuracies are fractions.
MAX_ACC = 1.0




@register_pytree
@attrs.frozen(kw_only=True, init=False)
class RewardInputs:
    """One env's step-t inputs (or a stack of them along leading axes). Stages are integer Stage codes."""

    stage_before: Array  # [S] int, x_{t−1}
    stage_after: Array  # [S] int, x_t
    contribution: Array  # [S] c_s of this epoch's validation
    measured: Array  # [S] 0/1; all 0 on a rollback step
    acc_at_germination: Array  # [S]
    last_contribution: Array  # [S] latest measured contribution of x_t's seed
    seed_params_before: Array  # [S] params of each seed/fossil of x_{t−1}
    host_params: Array  # []
    acc: Array  # [] this step's val acc
    op: Array  # [] int Op code
    slot: Array  # [] int
    culled_age: Array  # [] age of the seed the action culled (0 if none)
    terminal: Array  # [] 0/1
    rolled_back: Array  # [] 0/1

    def __init__(self, **values: Array) -> None:
        set_frozen_fields(self, values)


@register_pytree
@attrs.frozen(kw_only=True, init=False)
class RewardComponents:
    """Signed reward components of step t; `total` is their exact sum."""

    total: Array
    contribution: Array
    pbrs: Array
    rent: Array
    terminal: Array
    governor: Array
    early_cull: Array

    def __init__(self, **values: Array) -> None:
        set_frozen_fields(self, values)




# --- pieces -----------------------------------------------------------------------------------


def potential(stages: Array, potentials: Array) -> Array:
    """Φ(x) = Σ_s φ(stage_s); `potentials` is indexed by Stage code."""
    return namespace(potentials).sum(potentials[stages], axis=-1)


def _potentials(cfg: RLConfig, like: Array) -> Array:
    xp = namespace(like)
    return xp.asarray(cfg.potentials, dtype=like.dtype, device=device(like))


def bounded_attribution(contribution: Array, acc: Array, acc_at_germination: Array) -> Array:
    """ĉ = c if c ≤ g else sqrt(c·g): a seed cannot claim more than the env gained since it was germinated."""
    xp = namespace(contribution)
    gain = xp.clip(acc[..., None] - acc_at_germination, min=0.0)
    # The clip only guards the branch `where` discards (c·g < 0 needs c < 0 ≤ g, i.e. c ≤ g).
    shrunk = xp.sqrt(xp.clip(contribution * gain, min=0.0))
    return xp.where(contribution <= gain, contribution, shrunk)


def _contribution(x: RewardInputs, cfg: RLConfig) -> Array:
    xp = namespace(x.acc)
    c_hat = bounded_attribution(x.contribution, x.acc, x.acc_at_germination)
    per_slot = x.measured * xp.clip(c_hat, min=-cfg.contribution_cap, max=cfg.contribution_cap)
    total = cfg.contribution_weight * xp.sum(per_slot, axis=-1)
    return xp.clip(total, min=-cfg.contribution_total_cap, max=cfg.contribution_total_cap)


def _pbrs(x: RewardInputs, cfg: RLConfig) -> Array:
    phi = _potentials(cfg, x.acc)
    after = potential(x.stage_after, phi) * (1.0 - x.terminal)  # Φ(x_{E−1}) := 0
    return cfg.gamma * after - potential(x.stage_before, phi)


def _seed_params(x: RewardInputs) -> Array:
    return namespace(x.acc).sum(x.seed_params_before, axis=-1)


def _rent(x: RewardInputs, cfg: RLConfig) -> Array:
    xp = namespace(x.acc)
    ratio = _seed_params(x) / xp.clip(x.host_params, min=1.0)
    return -xp.clip(cfg.rent_weight * xp.log1p(ratio), max=cfg.rent_cap)


def _terminal_shaped(x: RewardInputs, cfg: RLConfig, threshold: float) -> Array:
    xp = namespace(x.acc)
    good = (x.stage_after == int(Stage.FOSSILIZED)) & (x.last_contribution >= threshold)
    fossils = xp.sum(xp.astype(good, x.acc.dtype), axis=-1)
    return x.terminal * (cfg.terminal_acc_weight * x.acc + cfg.terminal_fossil_weight * fossils)


def _terminal_sparse(x: RewardInputs, cfg: RLConfig) -> Array:
    score = x.acc - cfg.sparse_param_weight * _seed_params(x) / cfg.sparse_param_scale
    return x.terminal * namespace(x.acc).clip(score, min=-1.0, max=1.0)


def _governor(x: RewardInputs, cfg: RLConfig) -> Array:
    return -cfg.governor_penalty * x.rolled_back


def _early_cull(x: RewardInputs, cfg: RLConfig) -> Array:
    young = (x.op == int(Op.CULL)) & (x.culled_age < cfg.early_cull_age)
    return -cfg.early_cull_penalty * namespace(x.acc).astype(young, x.acc.dtype)


def _components(contribution: Array, pbrs: Array, rent: Array, terminal: Array,
                governor: Array, early_cull: Array) -> RewardComponents:
    total = contribution + pbrs + rent + terminal + governor + early_cull
    return RewardComponents(total=total, contribution=contribution, pbrs=pbrs, rent=rent,
                            terminal=terminal, governor=governor, early_cull=early_cull)


# --- the three modes --------------------------------------------------------------------------


def reward_shaped(inputs: RewardInputs, cfg: RLConfig, min_fossilize_contribution: float) -> RewardComponents:
    zero = namespace(inputs.acc).zeros_like(inputs.acc)
    return _components(_contribution(inputs, cfg), _pbrs(inputs, cfg), _rent(inputs, cfg),
                       _terminal_shaped(inputs, cfg, min_fossilize_contribution), _governor(inputs, cfg), zero)


def reward_sparse(inputs: RewardInputs, cfg: RLConfig, min_fossilize_contribution: float) -> RewardComponents:
    zero = namespace(inputs.acc).zeros_like(inputs.acc)
    return _components(zero, zero, zero, _terminal_sparse(inputs, cfg), _governor(inputs, cfg), zero)


def reward_minimal(inputs: RewardInputs, cfg: RLConfig, min_fossilize_contribution: float) -> RewardComponents:
    zero = namespace(inputs.acc).zeros_like(inputs.acc)
    return _components(zero, zero, zero, _terminal_sparse(inputs, cfg), _governor(inputs, cfg),
                       _early_cull(inputs, cfg))


MODES = {"shaped": reward_shaped, "sparse": reward_sparse, "minimal": reward_minimal}


def reward(inputs: RewardInputs, cfg: RLConfig, min_fossilize_contribution: float) -> RewardComponents:
    """r_t for `cfg.reward_mode` (a static Python choice, so vmap and compile see one branch)."""
    return MODES[cfg.reward_mode](inputs, cfg, min_fossilize_contribution)


def reward_bound(mode: str, n_slots: int, cfg: RLConfig | None = None) -> float:
    """Largest raw |r_t| (§7.4): 1 + 0.6·S + 0.5 + (1 + 0.1·S) + 1 shaped, 2.1 sparse/minimal at defaults.

    Computed from `cfg`'s constants (defaults when None), for accuracies in [0, 1]. Sparse and minimal
    share one bound, the early-cull penalty included.
    """
    cfg = RLConfig() if cfg is None else cfg
    if mode not in MODES:
        raise ValueError(f"unknown reward mode {mode!r}; modes are {sorted(MODES)}")
    governor = abs(cfg.governor_penalty)
    if mode != "shaped":
        return 1.0 + governor + abs(cfg.early_cull_penalty)
    phi_span = max(max(cfg.potentials), 0.0) + max(-min(cfg.potentials), 0.0)  # |γΦ(a) − Φ(b)| ≤ S·span
    terminal = abs(cfg.terminal_acc_weight) * MAX_ACC + abs(cfg.terminal_fossil_weight) * n_slots
    return cfg.contribution_total_cap + phi_span * n_slots + cfg.rent_cap + terminal + governor


# --- packing from lifecycle snapshots ---------------------------------------------------------


def stack_inputs(items: Sequence[RewardInputs]) -> RewardInputs:
    """Stack per-env inputs along a new leading axis (the env axis `vmap` maps over)."""
    return tree_stack(items)


def _slot_row(before: SlotState, after: SlotState, rolled_back: bool) -> tuple[float, float, float, float]:
    """(contribution, measured, acc_at_germination, last_contribution) of one slot at step t.

    `record` wrote this epoch's measurements into the seeds, and `act`/`advance` keep them, so x_t's seed
    holds c_s when it is the same seed that x_{t−1} held (a seed germinated this step was never validated).
    """
    old, new = before.seed, after.seed
    last = new.contribution if new is not None and new.contribution is not None else MISSING_CONTRIBUTION
    same = old is not None and new is not None and old.seed_id == new.seed_id
    measured = (same and not rolled_back and old.stage in MEASURED_STAGES and new.contribution is not None)
    contribution = new.contribution if measured else 0.0
    acc_at_germination = old.acc_at_germination if old is not None else 0.0
    return float(contribution), float(measured), float(acc_at_germination), float(last)


def reward_inputs(
    before: LifecycleState, after: LifecycleState, *, acc: float, op: int, slot: int, terminal: bool,
    rolled_back: bool, host_params: int, seed_params_before: Sequence[int], culled_age: int,
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
) -> RewardInputs:
    """Pack step t's `RewardInputs` from the stored snapshots x_{t−1} (`before`) and x_t (`after`).

    A slot counts as measured when x_{t−1} held a seed with α > 0 (BLENDING, PROBATIONARY, FOSSILIZED)
    whose contribution this epoch's `record` stored; on a rollback step nothing is measured (§7.1).
    """
    n = len(before.slots)
    if len(after.slots) != n or len(seed_params_before) != n:
        raise ValueError(f"slot counts differ: before {n}, after {len(after.slots)}, "
                         f"seed_params_before {len(seed_params_before)}")
    if not math.isfinite(acc):
        raise ValueError(f"acc must be finite, got {acc}")
    rows = [_slot_row(b, a, rolled_back) for b, a in zip(before.slots, after.slots, strict=True)]
    contribution, measured, acc_at_germ, last = (list(col) for col in zip(*rows, strict=True))

    def floats(values: object) -> Tensor:
        return torch.tensor(values, dtype=dtype, device=device)

    def ints(values: object) -> Tensor:
        return torch.tensor(values, dtype=torch.int64, device=device)

    return RewardInputs(
        stage_before=ints([int(s.stage) for s in before.slots]),
        stage_after=ints([int(s.stage) for s in after.slots]),
        contribution=floats(contribution), measured=floats(measured),
        acc_at_germination=floats(acc_at_germ), last_contribution=floats(last),
        seed_params_before=floats([float(p) for p in seed_params_before]),
        host_params=floats(float(host_params)), acc=floats(float(acc)),
        op=ints(int(op)), slot=ints(int(slot)), culled_age=floats(float(culled_age)),
        terminal=floats(float(terminal)), rolled_back=floats(float(rolled_back)),
    )


# --- returns ----------------------------------------------------------------------------------


def discounted_prefix(rewards: Array, valid: Array, gamma: float) -> Array:
    """H_t = valid_t · (r_t + γ·H_{t−1}), H_{−1} = 0, over the last (time) axis; 0 on invalid steps."""
    xp = namespace(rewards)
    valid = xp.astype(valid, rewards.dtype)
    carry = xp.zeros_like(rewards[..., 0])
    out = []
    for t in range(rewards.shape[-1]):  # T is static: unrolled under jit and compile, no data-dependent control
        carry = valid[..., t] * (rewards[..., t] + gamma * carry)
        out.append(carry)
    return xp.stack(out, axis=-1)


def pbrs_sum(stage_before: Array, stage_after: Array, valid: Array, terminal: Array,
             potentials: Array, gamma: float) -> Array:
    """Σ_t valid_t · γ^t · F_t recomputed from stored stage snapshots [T, S] (the telescoping check)."""
    xp = namespace(potentials)
    dtype = potentials.dtype
    after = potential(stage_after, potentials) * (1.0 - xp.astype(terminal, dtype))
    shaping = gamma * after - potential(stage_before, potentials)
    steps = xp.arange(stage_before.shape[-2], dtype=dtype, device=device(potentials))
    return xp.sum(xp.astype(valid, dtype) * gamma**steps * shaping, axis=-1)
