"""The array namespace of the core's numerics: one source for torch tensors and jax arrays.

`gae`, the rewards, the running-stats merge and `ppo_loss` are written once against the array API
standard (https://data-apis.org/array-api/) through `array-api-compat`:

    xp = namespace(x)       # array_api_compat.torch for a torch.Tensor, jax.numpy for a jax.Array
    xp.where(mask, x, xp.zeros_like(x)); xp.sum(x, axis=-1); xp.astype(mask, x.dtype); xp.clip(n, min=1.0)

so one function runs eagerly, under `torch.func.vmap` and `torch.compile(fullgraph=True)` on torch, and
under `jax.jit` / `jax.vmap` on jax. Shared code uses only the namespace, Python operators and indexing
(`x[..., None]`, `x[1:]`, and `table[codes]` with an integer array, which both frameworks support): no
framework method such as `.detach`, `.new_zeros` or `.clamp_min`; `device(x)` places new constants next
to x. The standard has no autodiff, so `stop_gradient` is one addition; `clip_closed` is the other: the
frameworks differentiate `clip` differently at its bounds (torch.clamp: slope 1, jnp.clip: 1/2), and a
differentiated clip must give both the same gradient.

The core never requires jax (an optional extra): nothing here imports it unless a jax array arrives.
"""

from typing import TYPE_CHECKING, Any, TypeAlias

import array_api_compat
import array_api_compat.torch as torch_namespace
import torch

__all__ = ["Array", "clip_closed", "device", "namespace", "stop_gradient"]

if TYPE_CHECKING:
    import jax

    Array: TypeAlias = torch.Tensor | jax.Array
else:
    Array: TypeAlias = Any  # a torch.Tensor or a jax.Array (jax is not imported at run time)


def namespace(x: Array) -> Any:
    """The array API namespace of the array x.

    A torch tensor short-cuts `array_api_compat.array_namespace`, whose type checks are lru_caches that
    torch.compile traces around with a warning at every compile.
    """
    if isinstance(x, torch.Tensor):
        return torch_namespace
    return array_api_compat.array_namespace(x)


def device(x: Array) -> Any:
    """The device of x, for new constants placed next to it (torch short-cut as in `namespace`)."""
    if isinstance(x, torch.Tensor):
        return x.device
    return array_api_compat.device(x)


def stop_gradient(x: Array) -> Array:
    """x as a constant for differentiation: `Tensor.detach` on torch, `jax.lax.stop_gradient` on jax."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if array_api_compat.is_jax_array(x):
        import jax  # only reached with a jax array in hand, so jax is installed

        return jax.lax.stop_gradient(x)
    return x  # a namespace without autodiff (numpy): nothing to stop


def clip_closed(x: Array, lo: float, hi: float) -> Array:
    """clip(x, lo, hi) with slope 1 on the closed interval [lo, hi] on every framework (torch.clamp's convention).

    `jnp.clip` is min(max(x, lo), hi), whose derivative at x = lo or x = hi is 1/2 (a tie of max or min), so
    the same loss would get different gradients on a sample at the clip boundary. Strict comparisons keep x.
    """
    xp = namespace(x)
    return xp.where(x < lo, xp.full_like(x, lo), xp.where(x > hi, xp.full_like(x, hi), x))
