"""JAX twin of `esper.core.rewards` (docs/rl.md §7): `reward` in all three modes and `discounted_prefix`.

Same equations and time-index convention as the torch module (see its docstring): step t moves x_{t−1} to
x_t; F_t = γ·Φ(x_t)·(1 − terminal_t) − Φ(x_{t−1}); H_t = valid_t·(r_t + γ·H_{t−1}). Inputs and outputs are
the torch module's `RewardInputs` / `RewardComponents` pytrees holding jax arrays (`register_pytree`
registers them with jax too), so values cross between the two through DLPack leaf by leaf.
"""

import jax
import jax.numpy as jnp

from esper.core.actions import Op
from esper.core.rewards import RewardComponents, RewardInputs
from esper.core.rl_config import RLConfig
from esper.core.stages import Stage

Array = jax.Array


def potential(stages: Array, potentials: Array) -> Array:
    return potentials[stages].sum(-1)


def _contribution(x: RewardInputs, cfg: RLConfig) -> Array:
    gain = jnp.maximum(x.acc[..., None] - x.acc_at_germination, 0.0)
    shrunk = jnp.sqrt(jnp.maximum(x.contribution * gain, 0.0))
    c_hat = jnp.where(x.contribution <= gain, x.contribution, shrunk)
    per_slot = x.measured * jnp.clip(c_hat, -cfg.contribution_cap, cfg.contribution_cap)
    total = cfg.contribution_weight * per_slot.sum(-1)
    return jnp.clip(total, -cfg.contribution_total_cap, cfg.contribution_total_cap)


def _pbrs(x: RewardInputs, cfg: RLConfig) -> Array:
    phi = jnp.asarray(cfg.potentials, dtype=x.acc.dtype)
    after = potential(x.stage_after, phi) * (1.0 - x.terminal)
    return cfg.gamma * after - potential(x.stage_before, phi)


def _rent(x: RewardInputs, cfg: RLConfig) -> Array:
    ratio = x.seed_params_before.sum(-1) / jnp.maximum(x.host_params, 1.0)
    return -jnp.minimum(cfg.rent_weight * jnp.log1p(ratio), cfg.rent_cap)


def _terminal_shaped(x: RewardInputs, cfg: RLConfig, threshold: float) -> Array:
    good = (x.stage_after == int(Stage.FOSSILIZED)) & (x.last_contribution >= threshold)
    fossils = good.astype(x.acc.dtype).sum(-1)
    return x.terminal * (cfg.terminal_acc_weight * x.acc + cfg.terminal_fossil_weight * fossils)


def _terminal_sparse(x: RewardInputs, cfg: RLConfig) -> Array:
    score = x.acc - cfg.sparse_param_weight * x.seed_params_before.sum(-1) / cfg.sparse_param_scale
    return x.terminal * jnp.clip(score, -1.0, 1.0)


def _governor(x: RewardInputs, cfg: RLConfig) -> Array:
    return -cfg.governor_penalty * x.rolled_back


def _early_cull(x: RewardInputs, cfg: RLConfig) -> Array:
    young = (x.op == int(Op.CULL)) & (x.culled_age < cfg.early_cull_age)
    return -cfg.early_cull_penalty * young.astype(x.acc.dtype)


def _components(contribution: Array, pbrs: Array, rent: Array, terminal: Array,
                governor: Array, early_cull: Array) -> RewardComponents:
    total = contribution + pbrs + rent + terminal + governor + early_cull
    return RewardComponents(total=total, contribution=contribution, pbrs=pbrs, rent=rent,
                            terminal=terminal, governor=governor, early_cull=early_cull)


def reward(inputs: RewardInputs, cfg: RLConfig, min_fossilize_contribution: float) -> RewardComponents:
    """Twin of `esper.core.rewards.reward`: the mode is a static Python choice."""
    zero = jnp.zeros_like(inputs.acc)
    governor = _governor(inputs, cfg)
    if cfg.reward_mode == "shaped":
        return _components(_contribution(inputs, cfg), _pbrs(inputs, cfg), _rent(inputs, cfg),
                           _terminal_shaped(inputs, cfg, min_fossilize_contribution), governor, zero)
    early_cull = _early_cull(inputs, cfg) if cfg.reward_mode == "minimal" else zero
    return _components(zero, zero, zero, _terminal_sparse(inputs, cfg), governor, early_cull)


def discounted_prefix(rewards: Array, valid: Array, gamma: float) -> Array:
    """Twin of `esper.core.rewards.discounted_prefix` (scan over the last axis)."""

    def step(carry: Array, xs: tuple[Array, Array]) -> tuple[Array, Array]:
        r, v = xs
        h = v * (r + gamma * carry)
        return h, h

    xs = (jnp.moveaxis(rewards, -1, 0), jnp.moveaxis(valid.astype(rewards.dtype), -1, 0))
    _, out = jax.lax.scan(step, jnp.zeros_like(rewards[..., 0]), xs)
    return jnp.moveaxis(out, 0, -1)
