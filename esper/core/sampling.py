"""Masked factored sampling (docs/rl.md §3): mask tensors, masked logits, normalised entropy,
Gumbel-max sampling from passed noise, and the conditional mask rows of each head.

Heads h ∈ (op, slot, blueprint, tempo), relevance u(op) ∈ {0, 1}^4 from `actions.RELEVANCE`.
Per env and step t (time index: one step = one epoch boundary; leading axes [N] when acting,
[B, T] when evaluating, always broadcast alike):

    op_mask    = op_valid                                          [4]
    slot_mask  = where(u_slot(op),  slot_valid[op],  onehot0)      [S]
    bp_mask    = where(u_bp(op),    bp_valid[slot],  onehot0)      [K]
    tempo_mask = where(u_tempo(op), tempo_valid,     onehot0)      [T3]

    z̃_h   = where(mask_h, z_h, −1e4)                  (float32: masked probabilities exactly 0)
    a_h   = argmax(z̃_h − log(−log U_h)),  U_h clamped to [1e-10, 1 − 1e-7]        (Gumbel-max)
    logπ(a) = Σ_h u_h · log softmax(z̃_h)[a_h]
    H_h   = −Σ_{mask_h} p log p,   Ĥ_h = where(n_valid > 1, H_h / log n_valid, 0) ∈ [0, 1]

An irrelevant head's row is the one-hot dummy, so it has exactly one choice (index 0), log-prob 0
and entropy 0. Every function here is pure: the uniforms U come from a generator the caller owns.
"""

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from esper.core.actions import HEADS, RELEVANCE, ActionMasks, FactoredAction, Op
from esper.core.pytree import register_pytree, tree_stack

N_OPS = len(Op)
U_MIN, U_MAX = 1e-10, 1.0 - 1e-7

# [op, head] relevance u_h(op) as floats, rows in Op order, columns in HEADS order.
RELEVANCE_TABLE: Tensor = torch.tensor([RELEVANCE[op] for op in Op], dtype=torch.float32)
assert RELEVANCE_TABLE.shape == (N_OPS, len(HEADS))


@register_pytree
@attrs.frozen
class MaskTensors:
    """Legality per head as bool tensors: op[..., 4], slot[..., 4, S], blueprint[..., S, K], tempo[..., T3]."""

    op: Tensor
    slot: Tensor
    blueprint: Tensor
    tempo: Tensor

    @property
    def batch_shape(self) -> torch.Size:
        return self.op.shape[:-1]


@register_pytree
@attrs.frozen
class Noise:
    """One uniform per category and env: op[N, 4], slot[N, S], blueprint[N, K], tempo[N, T3]."""

    op: Tensor
    slot: Tensor
    blueprint: Tensor
    tempo: Tensor


def mask_tensors(masks: ActionMasks, device: torch.device | str | None = None) -> MaskTensors:
    """One env's `ActionMasks` (plain tuples) as bool tensors."""

    def as_bool(rows: Sequence) -> Tensor:
        return torch.tensor(rows, dtype=torch.bool, device=device)

    return MaskTensors(as_bool(masks.op), as_bool(masks.slot), as_bool(masks.blueprint), as_bool(masks.tempo))


def stack_masks(masks: Sequence[MaskTensors]) -> MaskTensors:
    """Stack along a new leading dim 0; applied twice, [N] envs of [E] steps give [N, E, ...]."""
    return tree_stack(masks)


def masked_logits(logits: Tensor, mask: Tensor, value: float = -1e4) -> Tensor:
    """where(mask, logits, value) in float32: finite (bf16-safe), and exp underflows to exactly 0."""
    logits = logits.float()
    return torch.where(mask, logits, logits.new_tensor(value))


def head_entropy(masked: Tensor, mask: Tensor) -> Tensor:
    """Normalised entropy Ĥ of the masked distribution over the last axis, in [0, 1].

    log_softmax keeps log p finite, and masked terms are dropped by `where`, so 0·log 0 never
    meets a NaN in either the value or its gradient.
    """
    log_p = torch.log_softmax(masked, dim=-1)
    plogp = torch.where(mask, log_p.exp() * log_p, torch.zeros_like(log_p))
    entropy = -plogp.sum(-1)
    n_valid = mask.sum(-1)
    # log(max(n, 2)) keeps the unused branch finite (n = 1 would divide by log 1 = 0).
    scale = torch.log(n_valid.clamp(min=2).to(entropy.dtype))
    return torch.where(n_valid > 1, (entropy / scale).clamp(0.0, 1.0), torch.zeros_like(entropy))


def gumbel_argmax(masked: Tensor, uniform: Tensor) -> Tensor:
    """argmax(z̃ − log(−log U)) over the last axis: a sample of softmax(z̃) (int64)."""
    u = uniform.to(masked.dtype).clamp(U_MIN, U_MAX)
    return torch.argmax(masked - torch.log(-torch.log(u)), dim=-1)


def draw_noise(generator: torch.Generator, n: int, n_slots: int, n_blueprints: int, n_tempo: int = 3) -> Noise:
    """The uniforms of one acting step for n envs, from `generator` (never the global RNG)."""

    def rand(k: int) -> Tensor:
        return torch.rand((n, k), generator=generator, device=generator.device)

    return Noise(rand(N_OPS), rand(n_slots), rand(n_blueprints), rand(n_tempo))


def relevance(op: Tensor) -> Tensor:
    """u(op): float [..., 4] in HEADS order."""
    return RELEVANCE_TABLE.to(op.device)[op]


def _u(op: Tensor, u: Tensor | None, head: int) -> Tensor:
    return (relevance(op) if u is None else u)[..., head] > 0


def canonical(op: Tensor, index: Tensor, head: int, u: Tensor | None = None) -> Tensor:
    """The stored index where head `head` is relevant, else 0 (what the dummy row samples).
    `u` is relevance(op) when the caller already has it."""
    return torch.where(_u(op, u, head), index, torch.zeros_like(index))


def _onehot0(n: int, like: Tensor) -> Tensor:
    """[True, False, …, False]: the dummy row, whose only choice is index 0."""
    return torch.arange(n, device=like.device) == 0


def _select_row(table: Tensor, index: Tensor) -> Tensor:
    """table[..., index, :] per batch element (table [..., R, C], index [...])."""
    idx = index[..., None, None].expand(*index.shape, 1, table.shape[-1])
    return torch.gather(table, -2, idx).squeeze(-2)


def _with_dummy(use: Tensor, row: Tensor) -> Tensor:
    return torch.where(use[..., None], row, _onehot0(row.shape[-1], row))


def slot_mask(masks: MaskTensors, op: Tensor, u: Tensor | None = None) -> Tensor:
    """where(u_slot(op), slot_valid[op], onehot0): [..., S]."""
    return _with_dummy(_u(op, u, 1), _select_row(masks.slot, op))


def blueprint_mask(masks: MaskTensors, op: Tensor, slot: Tensor, u: Tensor | None = None) -> Tensor:
    """where(u_bp(op), bp_valid[slot], onehot0): [..., K]. An irrelevant slot index is read as 0."""
    return _with_dummy(_u(op, u, 2), _select_row(masks.blueprint, canonical(op, slot, 1, u)))


def tempo_mask(masks: MaskTensors, op: Tensor, u: Tensor | None = None) -> Tensor:
    """where(u_tempo(op), tempo_valid, onehot0): [..., T3]."""
    return _with_dummy(_u(op, u, 3), masks.tempo.expand(*op.shape, masks.tempo.shape[-1]))


def head_masks(masks: MaskTensors, op: Tensor, slot: Tensor,
               blueprint: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four rows each head samples from, given the (sampled or stored) earlier heads.

    `blueprint` is accepted for symmetry with the action row; no mask depends on it.
    """
    del blueprint
    u = relevance(op)
    return masks.op, slot_mask(masks, op, u), blueprint_mask(masks, op, slot, u), tempo_mask(masks, op, u)


def to_actions(row: Tensor) -> FactoredAction:
    """A [4] integer row (op, slot, blueprint, tempo) as the lifecycle's `FactoredAction`."""
    op, slot, blueprint, tempo = (int(v) for v in row.tolist())
    return FactoredAction(Op(op), slot, blueprint, tempo)
