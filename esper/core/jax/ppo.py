"""JAX twin of `esper.core.ppo.ppo_loss` (docs/rl.md §6): same equations, masks and diagnostics (see the torch module).

`batch` is the torch module's `PPOBatch` pytree holding jax arrays (`register_pytree` registers it with jax too);
the diagnostics come back as a dict keyed by `PPODiagnostics`' field names.
"""

import jax
import jax.numpy as jnp

from esper.core.jax.gae import explained_variance
from esper.core.ppo import PPOBatch, PPOCoefs

Array = jax.Array


def _masked_sum(x: Array, mask: Array) -> Array:
    return jnp.where(mask, x, 0.0).sum((0, 1))


def ppo_loss(logp: Array, ent_norm: Array, value: Array, batch: PPOBatch,
             coefs: PPOCoefs) -> tuple[Array, dict[str, Array]]:
    """(L, diagnostics) for logp[B, T, 4], ent_norm[B, T, 4], value[B, T]."""
    step = batch.valid > 0
    head = step[..., None] & (batch.relevance > 0)
    n = jnp.maximum(step.astype(value.dtype).sum(), 1.0)
    n_h = head.astype(value.dtype).sum((0, 1))
    n_h1 = jnp.maximum(n_h, 1.0)

    logratio = jnp.where(head, logp - batch.logp_old, 0.0)
    ratio = jnp.exp(logratio)
    adv = jnp.where(step, batch.advantages, 0.0)[..., None]
    clipped = jnp.clip(ratio, 1.0 - coefs.clip_eps, 1.0 + coefs.clip_eps)
    head_policy = _masked_sum(jnp.maximum(-ratio * adv, -clipped * adv), head) / n
    policy_loss = head_policy.sum()

    v, v_old, g = (jnp.where(step, x, 0.0) for x in (value, batch.value_old, batch.returns))
    v_clipped = v_old + jnp.clip(v - v_old, -coefs.value_clip_eps, coefs.value_clip_eps)
    worst = jnp.maximum((v - g) ** 2, (v_clipped - g) ** 2)
    value_loss = 0.5 * _masked_sum(worst, step) / n
    entropy = _masked_sum(ent_norm, head) / n_h1
    entropy_loss = -coefs.entropy_coef * entropy.sum()
    loss = policy_loss + coefs.value_coef * value_loss + entropy_loss

    sg = jax.lax.stop_gradient
    diag = _ratio_stats(sg(ratio), sg(logratio), head, step, n, n_h, coefs.clip_eps)
    value_d = sg(value)
    value_mean = _masked_sum(value_d, step) / n
    value_dev = jnp.where(step, value_d - value_mean, 0.0)
    value_std = jnp.sqrt((value_dev**2).sum() / jnp.maximum(step.sum() - 1.0, 1.0))
    return loss, {
        **diag, "entropy": sg(entropy), "policy_loss": sg(head_policy), "relevant_frac": n_h / n,
        "total_policy_loss": sg(policy_loss), "value_loss": sg(value_loss), "entropy_loss": sg(entropy_loss),
        "loss": sg(loss), "value_mean": value_mean, "value_std": value_std,
        "explained_variance": explained_variance(value_d, batch.returns, batch.valid),
    }


def _ratio_stats(ratio: Array, logratio: Array, head: Array, step: Array, n: Array, n_h: Array,
                 clip_eps: float) -> dict[str, Array]:
    n_h1 = jnp.maximum(n_h, 1.0)
    acted = n_h > 0
    mean = _masked_sum(ratio, head) / n_h1
    dev = jnp.where(head, ratio - mean, 0.0)
    std = jnp.sqrt((dev * dev).sum((0, 1)) / jnp.maximum(n_h - 1.0, 1.0))
    deviation = jnp.abs(ratio - 1.0)
    k3 = (ratio - 1.0) - logratio
    joint = logratio.sum(-1)
    joint_k3 = (jnp.exp(joint) - 1.0) - joint
    return {
        "ratio_mean": mean,
        "ratio_std": std,
        "ratio_min": jnp.where(acted, jnp.where(head, ratio, jnp.inf).min((0, 1)), 0.0),
        "ratio_max": jnp.where(acted, jnp.where(head, ratio, -jnp.inf).max((0, 1)), 0.0),
        "clip_frac": _masked_sum((deviation > clip_eps).astype(ratio.dtype), head) / n_h1,
        "approx_kl": _masked_sum(k3, head) / n_h1,
        "joint_approx_kl": _masked_sum(joint_k3, step) / n,
        "max_abs_ratio_dev": jnp.where(head, deviation, 0.0).max(),
    }
