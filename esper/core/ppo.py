r"""The clipped PPO loss over factored heads, its diagnostics and the entropy schedule (docs/rl.md §6).

Inputs are [B, T, ·] (B env sequences, step t = 0 … T−1 of each); heads h = op, slot, blueprint, tempo.
With u_h the relevance of head h under the executed op, valid_t the kept-step mask, m_{t,h} = valid_t·u_h,
ρ_h = exp(logp_h − logp_old_h), n = Σ valid and n_h = Σ m_h:

    L_π  = (1/n) Σ_t valid_t Σ_h u_h · max(−ρ_h Â_t, −clip(ρ_h, 1 ± ε) Â_t)
    L_V  = 0.5 · (1/n) Σ_t valid_t · max((V_t − G_t)², (V_old,t + clip(V_t − V_old,t, ±ε_v) − G_t)²)
    H̄_h  = Σ_t m_{t,h} Ĥ_{t,h} / max(n_h, 1),   L_H = −c(u) · Σ_h H̄_h
    L    = L_π + value_coef · L_V + L_H

    c(u) = max(c_end, c_start − (c_start − c_end) · min(1, u / (frac · U)))

Entries with m = 0 are *selected out* with `where` (never multiplied by 0), so the stored samples of an
irrelevant head, padding and any garbage (even inf/NaN) there change neither the loss nor a gradient.
Diagnostics are detached tensors; per-head statistics run over that head's relevant valid steps, and a
head with no such step reports 0. k3 KL estimator: E[(ρ − 1) − log ρ]. The joint log ratio of a step is
Σ_h u_h (logp_h − logp_old_h), whose k3 KL is the early-stop statistic.

Written once over the array namespace (`esper.core.xp`): the same `ppo_loss` runs on torch tensors (eager,
torch.func.vmap, torch.compile(fullgraph=True)) and on jax arrays (jax.jit, jax.vmap, jax.grad), and returns
`(loss, PPODiagnostics)` on both (`PPOBatch` and `PPODiagnostics` are pytrees of either framework's arrays).
Both clips have slope 1 on their closed interval (`xp.clip_closed`), so a sample exactly at a clip bound gets
the same gradient on either framework.
"""

from typing import ClassVar

import attrs

from esper.core.gae import explained_variance
from esper.core.pytree import register_pytree, set_frozen_fields
from esper.core.rl_config import RLConfig
from esper.core.xp import Array, clip_closed, namespace, stop_gradient


def entropy_coef(update: int, total_updates: int, cfg: RLConfig) -> float:
    """c(u): linear anneal from start to end over the first `entropy_anneal_frac` of the updates, then flat."""
    span = cfg.entropy_anneal_frac * max(total_updates, 1)
    progress = min(1.0, update / span)
    start, end = cfg.entropy_coef_start, cfg.entropy_coef_end
    if progress >= 1.0:  # flat at c_end exactly: start − (start − end)·1 rounds to 0.010000000000000002 (defaults)
        return end
    return max(end, start - (start - end) * progress)


@attrs.frozen(kw_only=True)
class PPOCoefs:
    clip_eps: float
    value_clip_eps: float
    value_coef: float
    entropy_coef: float | Array  # c(u); a 0-dim array under torch.compile, so its anneal never recompiles

    @classmethod
    def from_config(cls, cfg: RLConfig, entropy_coef: float | Array) -> "PPOCoefs":
        return cls(clip_eps=cfg.clip_eps, value_clip_eps=cfg.value_clip_eps, value_coef=cfg.value_coef,
                   entropy_coef=entropy_coef)


@register_pytree
@attrs.frozen(kw_only=True)
class PPOBatch:
    """Stored rollout quantities of a minibatch: [B, T, 4] per head, [B, T] per step."""

    logp_old: Array
    value_old: Array
    relevance: Array  # u_h(op_t), float 0/1
    valid: Array  # float 0/1
    advantages: Array  # normalised Â
    returns: Array  # G (from un-normalised A)




@register_pytree
@attrs.frozen(kw_only=True, init=False)
class PPODiagnostics:
    """Detached statistics of one loss evaluation; per-head fields have shape [4], the rest are scalars.

    Built inside the compiled loss, hence the hand-written keyword-only `__init__` (see `pytree.set_frozen_fields`).
    """

    HEAD_FIELDS: ClassVar[tuple[str, ...]] = ("ratio_mean", "ratio_std", "ratio_min", "ratio_max", "clip_frac",
                                              "approx_kl", "entropy", "policy_loss", "relevant_frac")

    ratio_mean: Array
    ratio_std: Array
    ratio_min: Array
    ratio_max: Array
    clip_frac: Array
    approx_kl: Array
    entropy: Array  # H̄_h
    policy_loss: Array  # each head's share of L_π (they sum to total_policy_loss)
    relevant_frac: Array  # n_h / n
    joint_approx_kl: Array
    max_abs_ratio_dev: Array
    total_policy_loss: Array  # L_π
    value_loss: Array  # L_V (before value_coef)
    entropy_loss: Array  # L_H
    loss: Array
    value_mean: Array
    value_std: Array
    explained_variance: Array

    def __init__(self, **values: Array) -> None:
        set_frozen_fields(self, values)


def _masked_sum(x: Array, mask: Array, axis: int | tuple[int, ...] | None) -> Array:
    xp = namespace(x)
    return xp.sum(xp.where(mask, x, xp.zeros_like(x)), axis=axis)


def step_counts(batch: PPOBatch) -> tuple[Array, Array]:
    """(n, n_h) of a batch: n = max(Σ valid, 1), n_h[4] = Σ m_h (the loss's denominators)."""
    xp = namespace(batch.valid)
    step = batch.valid > 0
    head = step[..., None] & (batch.relevance > 0)
    n = xp.clip(xp.sum(xp.astype(step, batch.valid.dtype)), min=1.0)
    return n, xp.sum(xp.astype(head, batch.valid.dtype), axis=(0, 1))


def ppo_loss(logp: Array, ent_norm: Array, value: Array, batch: PPOBatch, coefs: PPOCoefs,
             counts: tuple[Array, Array] | None = None) -> tuple[Array, PPODiagnostics]:
    """(L, diagnostics) for new log-probs logp[B, T, 4], normalised entropies ent_norm[B, T, 4], values[B, T].

    `counts`: the (n, n_h) of a larger batch whose rows these are (`step_counts` of it; default: this
    batch's own). L is then this shard's share of that batch's loss: the shards' losses and gradients
    sum to the whole batch's, and so do the diagnostics that are sums over steps divided by n or n_h
    (joint_approx_kl, loss, policy_loss, entropy, …); max_abs_ratio_dev is the max of the shards'."""
    xp = namespace(value)
    step = batch.valid > 0  # [B, T]
    head = step[..., None] & (batch.relevance > 0)  # m_{t,h} > 0, [B, T, 4]
    n, n_h = step_counts(batch) if counts is None else counts
    n, n_h = xp.astype(n, value.dtype), xp.astype(n_h, value.dtype)
    n_h1 = xp.clip(n_h, min=1.0)

    logratio = xp.where(head, logp - batch.logp_old, xp.zeros_like(logp))
    ratio = xp.exp(logratio)
    adv = xp.where(step, batch.advantages, xp.zeros_like(batch.advantages))[..., None]
    clipped = clip_closed(ratio, 1.0 - coefs.clip_eps, 1.0 + coefs.clip_eps)
    surrogate = xp.maximum(-ratio * adv, -clipped * adv)
    head_policy = _masked_sum(surrogate, head, (0, 1)) / n
    policy_loss = xp.sum(head_policy)

    value_loss = _value_loss(value, batch, step, n, coefs.value_clip_eps)
    entropy = _masked_sum(ent_norm, head, (0, 1)) / n_h1
    entropy_loss = -coefs.entropy_coef * xp.sum(entropy)
    loss = policy_loss + coefs.value_coef * value_loss + entropy_loss

    diag = _diagnostics(stop_gradient(ratio), stop_gradient(logratio), head, step, n, n_h, coefs.clip_eps)
    value_d = stop_gradient(value)
    value_mean, value_std = _mean_std(value_d, step, n)
    return loss, PPODiagnostics(
        **diag, entropy=stop_gradient(entropy), policy_loss=stop_gradient(head_policy), relevant_frac=n_h / n,
        total_policy_loss=stop_gradient(policy_loss), value_loss=stop_gradient(value_loss),
        entropy_loss=stop_gradient(entropy_loss), loss=stop_gradient(loss), value_mean=value_mean,
        value_std=value_std, explained_variance=explained_variance(value_d, batch.returns, batch.valid),
    )


def _value_loss(value: Array, batch: PPOBatch, step: Array, n: Array, clip_eps: float) -> Array:
    xp = namespace(value)
    # Select before the squares: a masked-out NaN would otherwise turn the zero gradient into 0 · NaN.
    v, v_old, g = (xp.where(step, x, xp.zeros_like(x)) for x in (value, batch.value_old, batch.returns))
    clipped = v_old + clip_closed(v - v_old, -clip_eps, clip_eps)
    worst = xp.maximum((v - g) ** 2, (clipped - g) ** 2)
    return 0.5 * _masked_sum(worst, step, (0, 1)) / n


def _mean_std(x: Array, mask: Array, n: Array) -> tuple[Array, Array]:
    """Masked mean and Bessel standard deviation over all dims (0 for < 2 entries)."""
    xp = namespace(x)
    mean = _masked_sum(x, mask, None) / n
    dev = xp.where(mask, x - mean, xp.zeros_like(x))
    var = xp.sum(dev * dev) / xp.clip(xp.sum(xp.astype(mask, x.dtype)) - 1.0, min=1.0)
    return mean, xp.sqrt(var)


def _diagnostics(ratio: Array, logratio: Array, head: Array, step: Array, n: Array, n_h: Array,
                 clip_eps: float) -> dict[str, Array]:
    """Per-head ratio statistics over relevant valid steps, plus the joint-KL early-stop statistics."""
    xp = namespace(ratio)
    n_h1 = xp.clip(n_h, min=1.0)
    acted = n_h > 0
    zero = xp.zeros_like(n_h)
    mean = _masked_sum(ratio, head, (0, 1)) / n_h1
    dev = xp.where(head, ratio - mean, xp.zeros_like(ratio))
    std = xp.sqrt(xp.sum(dev * dev, axis=(0, 1)) / xp.clip(n_h - 1.0, min=1.0))
    inf = xp.full_like(ratio, float("inf"))
    ratio_min = xp.min(xp.where(head, ratio, inf), axis=(0, 1))
    ratio_max = xp.max(xp.where(head, ratio, -inf), axis=(0, 1))
    deviation = xp.abs(ratio - 1.0)
    clip_frac = _masked_sum(xp.astype(deviation > clip_eps, ratio.dtype), head, (0, 1)) / n_h1
    k3 = (ratio - 1.0) - logratio
    joint_logratio = xp.sum(logratio, axis=-1)  # irrelevant heads and invalid steps are already exactly 0
    joint_k3 = (xp.exp(joint_logratio) - 1.0) - joint_logratio
    return {
        "ratio_mean": mean,
        "ratio_std": std,
        "ratio_min": xp.where(acted, ratio_min, zero),
        "ratio_max": xp.where(acted, ratio_max, zero),
        "clip_frac": clip_frac,
        "approx_kl": _masked_sum(k3, head, (0, 1)) / n_h1,
        "joint_approx_kl": _masked_sum(joint_k3, step, (0, 1)) / n,
        "max_abs_ratio_dev": xp.max(xp.where(head, deviation, xp.zeros_like(deviation))),
    }
