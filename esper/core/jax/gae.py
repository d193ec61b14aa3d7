"""JAX twin of `esper.core.gae` (docs/rl.md §5): `gae`, `episode_arrays`, `normalize_advantages`, `explained_variance`.

Same equations and time-index convention as the torch module (see its docstring): δ_t = r_t + d_t·v_next_t − v_t,
A_t = δ_t + d_t·λ_t·A_{t+1}, G_t = A_t + v_t, v_next_{T−1} = bootstrap. The recursion is a `lax.scan(reverse=True)`;
with values_ext = concat(values, [bootstrap]) it equals `rlax.truncated_generalized_advantage_estimation`.
"""

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

_NORM_EPS = 1e-8
_EV_MIN_VAR = 1e-8


def gae(rewards: Array, discounts: Array, values: Array, bootstrap: Array | float, lam: float | Array,
        stop_target_gradients: bool = True) -> tuple[Array, Array]:
    """(advantages[T], returns[T]) of one trajectory; `lam` is a scalar or a per-step array[T]."""
    bootstrap = jnp.asarray(bootstrap, dtype=values.dtype)
    if stop_target_gradients:
        values, bootstrap = lax.stop_gradient(values), lax.stop_gradient(bootstrap)
    lam_t = jnp.ones_like(rewards) * lam
    v_next = jnp.concatenate([values[1:], bootstrap.reshape(1)])
    delta = rewards + discounts * v_next - values

    def step(acc: Array, xs: tuple[Array, Array]) -> tuple[Array, Array]:
        delta_t, decay_t = xs
        acc = delta_t + decay_t * acc
        return acc, acc

    _, advantages = lax.scan(step, jnp.zeros_like(delta[0]), (delta, discounts * lam_t), reverse=True)
    return advantages, advantages + values


def episode_arrays(rewards: Array, values: Array, valid: Array, terminal: Array, gamma: float,
                   lam: float) -> tuple[Array, Array, Array, Array, Array]:
    """GAE inputs (r, d, λ_t, v, bootstrap) of one buffer row (see the torch twin)."""
    keep = valid.astype(values.dtype)
    keep_next = jnp.concatenate([keep[1:], jnp.zeros(1, keep.dtype)])
    keep_value = jnp.maximum(keep, jnp.concatenate([jnp.ones(1, keep.dtype), keep[:-1]]))
    r = jnp.where(keep > 0, rewards, jnp.zeros_like(rewards))
    d = gamma * keep * (1.0 - terminal.astype(values.dtype))
    lam_t = lam * keep_next
    v = jnp.where(keep_value > 0, values, jnp.zeros_like(values))
    return r, d, lam_t, v, jnp.zeros((), values.dtype)


def masked_mean_var(x: Array, valid: Array) -> tuple[Array, Array, Array]:
    """(mask, masked mean, masked Bessel variance)."""
    mask = valid > 0
    n = mask.astype(x.dtype).sum()
    mean = jnp.where(mask, x, 0.0).sum() / jnp.maximum(n, 1.0)
    dev = jnp.where(mask, x - mean, 0.0)
    return mask, mean, (dev * dev).sum() / jnp.maximum(n - 1.0, 1.0)


def normalize_advantages(adv: Array, valid: Array) -> Array:
    mask, mean, var = masked_mean_var(adv, valid)
    return jnp.where(mask, (adv - mean) / (jnp.sqrt(var) + _NORM_EPS), 0.0)


def explained_variance(values: Array, returns: Array, valid: Array) -> Array:
    _, _, var_g = masked_mean_var(returns, valid)
    _, _, var_res = masked_mean_var(returns - values, valid)
    ev = 1.0 - var_res / jnp.maximum(var_g, _EV_MIN_VAR)
    return jnp.where(var_g > _EV_MIN_VAR, ev, 0.0)
