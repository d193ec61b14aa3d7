"""JAX twin of `esper.core.running_stats.merge` and `normalize` (same equations, see that module).

The stats travel in the same `RunningStats` class with jax arrays as fields (it is registered as a
jax pytree too, so `jax.vmap` / `jax.jit` walk it). Float64 needs `jax_enable_x64`.
"""

import jax.numpy as jnp
from jax import Array

from esper.core.running_stats import RunningStats


def merge(stats: RunningStats, x: Array, valid: Array) -> RunningStats:
    """Chan's parallel merge of the valid rows of x[..., n, D] (valid[..., n], bool) into the stats."""
    dtype = stats.mean.dtype
    x = jnp.asarray(x, dtype)
    mask = valid[..., None]
    n_b = jnp.sum(valid.astype(dtype), axis=-1)[..., None]
    mean_b = jnp.sum(jnp.where(mask, x, 0.0), axis=-2) / jnp.maximum(n_b, 1.0)
    m2_b = jnp.sum(jnp.where(mask, (x - mean_b[..., None, :]) ** 2, 0.0), axis=-2)
    n_a = stats.count[..., None]
    total = n_a + n_b
    frac = n_b / jnp.maximum(total, 1.0)
    delta = mean_b - stats.mean
    mean = stats.mean + delta * frac
    var = (stats.var * n_a + m2_b + delta * delta * n_a * frac) / jnp.maximum(total, 1.0)
    has_rows = n_b > 0
    return RunningStats(
        mean=jnp.where(has_rows, mean, stats.mean),
        var=jnp.where(has_rows, var, stats.var),
        count=stats.count + n_b[..., 0],
    )


def normalize(stats: RunningStats, x: Array, binary: Array, std_floor: float, clip: float) -> Array:
    """where(binary, x, clip((x − mean) / max(sqrt(var), std_floor), −clip, clip))."""
    std = jnp.maximum(jnp.sqrt(stats.var), std_floor)
    z = jnp.clip((x - stats.mean) / std, -clip, clip)
    return jnp.where(binary, x, z)
