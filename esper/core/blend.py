r"""Blending and gradient isolation at a slot (docs/lifecycle.md §5): pure tensor functions.

Notation: h = host features at the slot, δ = the seed's delta module, s(h) = h + δ(h) the
seed's function, α ∈ [0, 1] the slot's alpha (a tensor broadcastable to h), g = ∂L/∂y the
gradient arriving at the slot output y. The shell's slot forward is

    d = δ(seed_input(h, input_grad))
    y = blend(h, d, α, ste)

    seed_input(h, input_grad) = h                if input_grad
                              = stop_gradient(h) otherwise

    m = where(α = 0, h, h + α·d)           value: lerp(h, s(h), α) = h + α·δ(h)
    y = StraightThrough(m, d)  if ste      value: y = m exactly;  ∂L/∂m = g, ∂L/∂d = g
      = m                      otherwise

Resulting gradients (the §5 table; J_δ = ∂δ/∂h):

    stage          ste    input_grad  α       y          ∂L/∂h at the slot   ∂L/∂d
    TRAINING       True   False       0       h exactly  g                   g
    BLENDING       False  False*      a(k/T)  h + α·δ    g                   α·g
    PROBATIONARY   False  False*      1       h + δ      g                   g
    FOSSILIZED     False  True        1       h + δ      g + J_δ(h)ᵀ g       g
    (* True from `input_grad_from` on)

`where` selects h itself when α = 0, so the output is bit-identical to h even when δ returns
NaN or inf (invariant I1). The direct path h → y always carries g unscaled (I3); only the path
through the seed is cut, until FOSSILIZED (I4). Everything here is shape-polymorphic and
passes `torch.func.vmap`, `torch.func.grad` and `torch.compile(fullgraph=True)`.
"""

from typing import Any

import attrs
import torch
from torch import Tensor

from esper.core.errors import ConfigError, LifecycleError
from esper.core.stages import Stage

_INPUT_GRAD_STAGES = (Stage.BLENDING, Stage.PROBATIONARY, Stage.FOSSILIZED)


def seed_input(h: Tensor, input_grad: bool) -> Tensor:
    """What the seed reads: h itself once its input gradient is released, else a detached h."""
    return h if input_grad else h.detach()


class StraightThrough(torch.autograd.Function):
    """y = m in value; backward(g) = (g, g), so the seed learns ⟨g, δ⟩ while the host sees m."""

    generate_vmap_rule = True

    @staticmethod
    def forward(m: Tensor, d: Tensor) -> Tensor:
        # A view, not arithmetic: the value is exactly m whatever d holds (NaN/inf included).
        return m.view_as(m)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        pass  # backward needs nothing saved

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor]:
        return g, g


def blend(h: Tensor, d: Tensor, alpha: Tensor, ste: bool) -> Tensor:
    """y = where(α = 0, h, h + α·d), wrapped in `StraightThrough` when `ste` (TRAINING).

    `alpha` is a tensor: 0-dim per slot, or per sample ((B,1,1,1) / (B,1,1)) for stacked
    counterfactual variants. `ste` is a Python bool: it is part of the compile key. `ste` is
    meant for α = 0 (TRAINING); with α ≠ 0 the seed would receive (1 + α)·g.
    """
    m = torch.where(alpha == 0, h, h + alpha * d)
    return StraightThrough.apply(m, d) if ste else m


@attrs.frozen
class BlendKnobs:
    """The two per-stage switches of a slot's forward (part of the model's compile key)."""

    ste: bool
    input_grad: bool


def knobs_for(stage: Stage, input_grad_from: Stage = Stage.FOSSILIZED) -> BlendKnobs:
    """The §5 knobs for a stage whose seed runs in the forward (TRAINING onwards).

    `input_grad_from` is the first stage whose seed input passes gradient into the host
    (`LifecycleConfig.input_grad_from`); TRAINING never does, whatever it says.
    """
    if input_grad_from not in _INPUT_GRAD_STAGES:
        raise ConfigError(
            f"input_grad_from must be one of {[s.name for s in _INPUT_GRAD_STAGES]}, "
            f"got {Stage(input_grad_from).name}"
        )
    if stage == Stage.TRAINING:
        return BlendKnobs(ste=True, input_grad=False)
    if stage in _INPUT_GRAD_STAGES:
        # Stage codes are ordered BLENDING < PROBATIONARY < FOSSILIZED, so "at/after" is >=.
        return BlendKnobs(ste=False, input_grad=stage >= input_grad_from)
    raise LifecycleError(f"stage {Stage(stage).name} has no seed module in the forward, hence no knobs")
