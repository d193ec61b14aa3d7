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

import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import array_api_compat
import array_api_compat.torch
import torch
from torch import Tensor

__all__ = ["Array", "clip_closed", "device", "namespace", "stop_gradient"]

if TYPE_CHECKING:
    import jax

    Array: TypeAlias = torch.Tensor | jax.Array
else:
    Array: TypeAlias = Any  # a torch.Tensor or a jax.Array (jax is not imported at run time)


# --- the torch namespace --------------------------------------------------------------------------------
# array-api-compat's wrappers check and promote their arguments in Python on every call. Against the torch-only
# code the shared numerics replaced (benchmarks/bench_shared_numerics.py, CPU, eager) they cost the PPO loss
# (forward + backward) about 13 % and the running-stats merge 11 %; with the ops below bound straight to torch,
# about 4 % each (gae and the rewards: within noise). The core passes these ops arrays of one float dtype (or
# bool), for which the direct calls mean exactly what the standard says.

Axis: TypeAlias = int | tuple[int, ...] | None


def _sum(x: Tensor, /, *, axis: Axis = None) -> Tensor:
    return torch.sum(x) if axis is None else torch.sum(x, dim=axis)


def _max(x: Tensor, /, *, axis: Axis = None) -> Tensor:
    return torch.amax(x) if axis is None else torch.amax(x, dim=axis)


def _min(x: Tensor, /, *, axis: Axis = None) -> Tensor:
    return torch.amin(x) if axis is None else torch.amin(x, dim=axis)


def _clip(x: Tensor, /, min: float | None = None, max: float | None = None) -> Tensor:
    return torch.clamp(x, min=min, max=max)


def _astype(x: Tensor, dtype: torch.dtype, /) -> Tensor:
    return x.to(dtype)


def _concat(arrays: Sequence[Tensor], /, *, axis: int = 0) -> Tensor:
    return torch.cat(tuple(arrays), dim=axis)


def _torch_namespace() -> types.ModuleType:
    """array_api_compat.torch with the hot ops direct; a module, which torch.compile reads like `torch` itself."""
    ns = types.ModuleType("esper.core.xp.torch", "array_api_compat.torch with esper's direct hot ops")
    compat = array_api_compat.torch
    ns.__dict__.update({name: getattr(compat, name) for name in compat.__all__})
    ns.__dict__.update(where=torch.where, reshape=torch.reshape, sum=_sum, max=_max, min=_min, clip=_clip,
                       astype=_astype, concat=_concat)
    return ns


TORCH = _torch_namespace()


def namespace(x: Array) -> Any:
    """The array API namespace of the array x.

    A torch tensor short-cuts `array_api_compat.array_namespace`, whose type checks are lru_caches that
    torch.compile traces around with a warning at every compile.
    """
    if isinstance(x, torch.Tensor):
        return TORCH
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
    if isinstance(x, torch.Tensor):
        return torch.clamp(x, lo, hi)  # already this convention, in one kernel
    xp = namespace(x)
    return xp.where(x < lo, xp.full_like(x, lo), xp.where(x > hi, xp.full_like(x, hi), x))
