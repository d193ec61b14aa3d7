r"""Alpha schedules: how a seed is faded into the host while BLENDING (docs/lifecycle.md §4).

With ramp position u ∈ [0, 1] and steepness s (default 12):

    LINEAR   a(u) = u
    COSINE   a(u) = (1 − cos πu) / 2            = sin²(πu / 2)
    SIGMOID  a(u) = (σ(s(u − ½)) − σ(−s/2)) / (σ(s/2) − σ(−s/2))
                  = sinh(su/2) / (2 · cosh(s(u − ½)/2) · sinh(s/4))

The right-hand forms are algebraically equal and keep a(u) > 0 for small u > 0 in floating
point. Every curve is pinned to a(u) = 0 for u ≤ 0 and a(u) = 1 for u ≥ 1 *exactly*.

Time index: in BLENDING epoch k = 1…T (T = tempo) the seed's alpha is a(k/T); with step
granularity, step j of J in epoch k uses u = (k − 1 + (j+1)/J) / T. `ramp_step` = k, 0 when
the seed is not ramping (alpha 0).

Two forms of one truth: `curve_value` / `ramp_alpha` on Python floats (the lifecycle's
`SeedState.alpha`), `alpha_curve` / `alpha_at` on tensors (vmap, grad and
compile(fullgraph) safe; curve selected with `torch.where`). A property test holds them equal.
"""

import math
from enum import IntEnum

import torch
from torch import Tensor

DEFAULT_STEEPNESS = 12.0


class Curve(IntEnum):
    LINEAR = 0
    COSINE = 1
    SIGMOID = 2

    def __str__(self) -> str:
        return self.name


def curve_value(curve: Curve, u: float, steepness: float = DEFAULT_STEEPNESS) -> float:
    """a(u) for one curve, on Python floats."""
    if u <= 0.0:
        return 0.0
    if u >= 1.0:
        return 1.0
    if curve == Curve.LINEAR:
        return u
    if curve == Curve.COSINE:
        return math.sin(math.pi * u / 2.0) ** 2
    if curve == Curve.SIGMOID:
        s = steepness
        if u > 0.5:  # the curve is point-symmetric about ½; evaluate the increasing half only
            return 1.0 - curve_value(curve, 1.0 - u, steepness)
        return math.sinh(s * u / 2) / (2 * math.cosh(s * (u - 0.5) / 2) * math.sinh(s / 4))
    raise ValueError(f"unknown curve {curve!r}")


def ramp_alpha(curve: Curve, tempo: int, ramp_step: int, frac: float = 1.0,
               steepness: float = DEFAULT_STEEPNESS) -> float:
    """Alpha at `frac` of BLENDING epoch `ramp_step` (1…tempo); 0 before the ramp begins."""
    if ramp_step < 1:
        return 0.0
    return curve_value(curve, (ramp_step - 1 + frac) / tempo, steepness)


def alpha_curve(curve: Tensor, u: Tensor, steepness: float = DEFAULT_STEEPNESS) -> Tensor:
    """a(u) on tensors; `curve` holds integer codes and broadcasts against `u`."""
    uc = u.clamp(0.0, 1.0)
    s = steepness
    linear = uc
    cosine = torch.sin(uc * (math.pi / 2)) ** 2
    upper = uc > 0.5
    # Evaluate the increasing half only, as in curve_value. `where`, not `minimum`: at the tie
    # u = ½ minimum splits the gradient between u and 1 − u, which cancel to a zero slope.
    lower = torch.where(upper, 1.0 - uc, uc)
    half = torch.sinh(lower * (s / 2)) / (2 * torch.cosh((lower - 0.5) * (s / 2)) * math.sinh(s / 4))
    sigmoid = torch.where(upper, 1.0 - half, half)
    # Compare with plain ints: dynamo cannot trace Tensor == IntEnum.
    is_linear, is_cosine = curve == int(Curve.LINEAR), curve == int(Curve.COSINE)
    value = torch.where(is_linear, linear, torch.where(is_cosine, cosine, sigmoid))
    return torch.where(u <= 0.0, 0.0, torch.where(u >= 1.0, 1.0, value))


def alpha_at(curve: Tensor, tempo: Tensor, ramp_step: Tensor, frac: Tensor | float = 1.0,
             steepness: float = DEFAULT_STEEPNESS) -> Tensor:
    """Tensor twin of `ramp_alpha`: u = (ramp_step − 1 + frac) / tempo, alpha 0 before step 1."""
    ramp = ramp_step.to(torch.get_default_dtype()) if not ramp_step.is_floating_point() else ramp_step
    u = torch.where(ramp >= 1, (ramp - 1 + frac) / tempo, 0.0)
    return alpha_curve(curve, u, steepness)
