r"""The running normaliser (docs/rl.md §2, §7.5): per-feature mean and population variance over every
valid row merged so far, and the clipped z-score of an observation.

Merge (Chan et al.'s parallel update, exact in exact arithmetic): with the stored (μ_A, σ²_A, n_A)
and the valid rows of a batch B, n_B = Σ valid, μ_B = Σ_B x / n_B, M2_B = Σ_B (x − μ_B)²,
δ = μ_B − μ_A, n = n_A + n_B:

    μ   = μ_A + δ · n_B / n
    σ²  = (σ²_A · n_A + M2_B + δ² · n_A · n_B / n) / n
    n_A = 0 → (μ_B, M2_B / n_B, n_B) (the batch statistics);  n_B = 0 → unchanged

Normalise: x̂ = where(binary, x, clamp((x − μ) / max(σ, std_floor), −clip, clip)).

Time index: the stats are frozen for a whole rollout and its update (every o_t of batch k is
normalised with the stats after batch k − 1's merge); the merge of batch k runs after its update.
`RunningStats.initial(D)` = (0, 1, 0), so the first rollout sees the pre-scaled features unchanged.

Dtype: float32 throughout (the dtype of the stats; `merge` casts the rows to it). The features are
pre-scaled to O(1), Chan's update has no catastrophic cancellation, and a float32 count is exact up
to 2^24 rows, far beyond a run's N·E·batches (8·75·50 = 30 000); one dtype keeps vmap, compile,
DLPack and JAX (which is float32 unless x64 is enabled) simple. Tests run the same code in float64.

All functions are pure, shape-polymorphic over leading batch dimensions (stats [..., D], rows
[..., n, D]) and written once over the array namespace (`esper.core.xp`): on torch they are vmap-able over
envs and accepted by torch.compile(fullgraph=True), on jax by jax.jit and jax.vmap (`RunningStats` is a
pytree of either framework's arrays; float64 on jax needs `jax_enable_x64`).
"""


import attrs
import torch

from esper.core.pytree import register_pytree, set_frozen_fields
from esper.core.xp import Array, namespace


@register_pytree
@attrs.frozen(kw_only=True, init=False)
class RunningStats:
    """mean[..., D], var[..., D] (population), count[...] (rows merged so far)."""

    mean: Array
    var: Array
    count: Array

    def __init__(self, **values: Array) -> None:
        set_frozen_fields(self, values)

    @classmethod
    def initial(cls, dim: int, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> "RunningStats":
        """(0, 1, 0): normalising with it is the identity up to the clip."""
        return cls(mean=torch.zeros(dim, dtype=dtype, device=device),
                   var=torch.ones(dim, dtype=dtype, device=device),
                   count=torch.zeros((), dtype=dtype, device=device))




def merge(stats: RunningStats, x: Array, valid: Array) -> RunningStats:
    """Fold the valid rows of x[..., n, D] (valid[..., n], bool) into the stats (module docstring)."""
    xp = namespace(stats.mean)
    dtype = stats.mean.dtype
    x = xp.astype(x, dtype)
    mask = valid[..., None]  # [..., n, 1]
    n_b = xp.sum(xp.astype(valid, dtype), axis=-1)[..., None]  # [..., 1]
    zeros = xp.zeros_like(x)
    # where, not multiply: an invalid row may hold NaN/Inf garbage, and 0 · NaN is NaN.
    mean_b = xp.sum(xp.where(mask, x, zeros), axis=-2) / xp.clip(n_b, min=1.0)
    m2_b = xp.sum(xp.where(mask, (x - mean_b[..., None, :]) ** 2, zeros), axis=-2)
    n_a = stats.count[..., None]
    total = n_a + n_b
    frac = n_b / xp.clip(total, min=1.0)
    delta = mean_b - stats.mean
    mean = stats.mean + delta * frac
    var = (stats.var * n_a + m2_b + delta * delta * n_a * frac) / xp.clip(total, min=1.0)
    has_rows = n_b > 0
    return RunningStats(
        mean=xp.where(has_rows, mean, stats.mean),
        var=xp.where(has_rows, var, stats.var),
        count=stats.count + n_b[..., 0],
    )


def normalize(stats: RunningStats, x: Array, binary: Array, std_floor: float, clip: float) -> Array:
    """where(binary, x, clip((x − mean) / max(sqrt(var), std_floor), −clip, clip)); x[..., D]."""
    xp = namespace(x)
    std = xp.clip(xp.sqrt(stats.var), min=std_floor)
    z = xp.clip((x - stats.mean) / std, min=-clip, max=clip)
    return xp.where(binary, x, z)
