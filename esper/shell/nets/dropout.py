"""Dropout that draws its masks from a generator the run owns, never from the global RNG.

Inverted dropout at rate p, per element i:

    train mode, p > 0:   y_i = x_i · m_i / (1 − p),   m_i ~ Bernoulli(1 − p) i.i.d., drawn from `generator`
    eval mode or p = 0:  y = x                         (nothing drawn)

so E[y] = x in train mode. The mask is drawn as `torch.nn.functional.dropout` draws it on the CPU
(`bernoulli_(1 − p)` on a tensor like x), so the same generator state gives the same mask.

`causal_attention` is softmax(q·kᵀ·s + causal mask)·v over (…, H, T, d_h). sdpa's own dropout draws
from the global RNG, so when weights drop it runs the product explicitly and drops them with a
`Dropout`; when nothing drops (eval, p = 0) it is sdpa, bit for bit what it was.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Dropout(nn.Module):
    """`nn.Dropout` with its masks drawn from `generator` (on the inputs' device type)."""

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate {p} outside [0, 1)")
        self.p = float(p)
        self.generator = generator  # shared, not copied: one stream for every dropout of a host

    @property
    def active(self) -> bool:
        return self.training and self.p > 0.0

    def forward(self, x: Tensor) -> Tensor:
        if not self.active:
            return x
        if self.generator.device.type != x.device.type:
            raise ValueError(f"dropout generator on {self.generator.device}, input on {x.device}: "
                             "give the host a dropout generator on the device it trains on")
        mask = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator).div_(1.0 - self.p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def replace_dropouts(module: nn.Module, generator: torch.Generator) -> None:
    """Swap every `nn.Dropout` below `module` (e.g. inside transformers' blocks) for a `Dropout` on `generator`."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(parent, name, Dropout(child.p, generator))


def dropout_generators(module: nn.Module) -> list[torch.Generator]:
    """The distinct generators the `Dropout`s below `module` draw from (what a measuring pass must restore)."""
    found: dict[int, torch.Generator] = {}
    for child in module.modules():
        if isinstance(child, Dropout):
            found.setdefault(id(child.generator), child.generator)
    return list(found.values())


def causal_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None, dropout: Dropout) -> Tensor:
    """softmax(q·kᵀ·scale, key j ≤ query i)·v with `dropout` on the weights; q, k, v (…, H, T, d_h)."""
    if not dropout.active:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    future = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
    scores = (q @ k.transpose(-2, -1)) * scale
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return dropout(weights.to(v.dtype)) @ v
