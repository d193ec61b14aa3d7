r"""Counterfactual variants that share their prefix (docs/lifecycle.md §8.3, docs/runtime.md §2.4).

V alpha variants of one model (the real model, α→0 ablations, α→1 shadows) differ only at the slots
they override, so the network before slot k is the same in every variant that agrees on slots
0…k−1. The variants form a tree: a *group* is a set of variants still identical at a slot boundary;
a slot splits a group where its variants first differ. With B samples, n slots, slot k between
segments k and k+1, and G_k the groups entering segment k (G_0 = 1):

    H_0     = seg_0(x)                                                       (B rows)
    D_k     = δ_k(H_k)                     once per group entering slot k, shared by its children
    H'_k[g] = blend(H_k[p(g)], D_k[p(g)], α_k[g])   for each group g leaving slot k, p(g) its parent
    H_{k+1} = seg_{k+1}(H'_k)                                                (G_{k+1}·B rows)
    out[v]  = H_{n+1}[leaf(v)]                                               (V, B, …)

α_k[g] is the group's override at slot k, or the slot's own alpha. A pass costs Σ_k G_k·c_k
(c_k: one sample's cost in segment k) against V·Σ_k c_k for V tiled copies. The measurement plan's
variants (the real model plus one per varied slot) give G_k = 1 + (varied slots before segment k),
so in units of one plain pass the cost is 1 + Σ_{varied slots} (the fraction of the network after the
slot). Per-sample operations make each variant's rows what `forward(x, variant)` computes on the
same rows, up to float rounding (a kernel may sum a B-row and a G·B-row batch in different orders).

The tree depends only on the variant specs and on which slots hold a module, never on tensor values:
the same variants always run the same kernels with no host sync (one trace under torch.compile).
"""

from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol

import attrs
import torch
from torch import Tensor

from esper.shell.nets.host_base import Host

Alpha = float | Tensor  # one variant's override at one slot


class BranchingSlot(Protocol):
    """What the tree needs of a slot holding a module (`model.SeedSlot`): δ, and the blend with α."""

    alpha: Tensor

    def delta(self, h: Tensor) -> Tensor: ...

    def mix(self, h: Tensor, d: Tensor, alpha: Tensor | None = None) -> Tensor: ...


@attrs.frozen(eq=False)
class Branch:
    """How one slot turns the groups entering it into the groups leaving it."""

    parents: tuple[int, ...]  # per leaving group, the entering group it continues
    alphas: tuple[Alpha | None, ...]  # per leaving group, its override (None: the slot's own alpha)
    n_in: int  # groups entering

    @property
    def splits(self) -> bool:
        return self.parents != tuple(range(self.n_in))


@attrs.frozen(eq=False)
class VariantTree:
    """Per slot, its `Branch` (None: an empty slot, the identity in every variant); per variant, its leaf."""

    branches: tuple[Branch | None, ...]
    leaves: tuple[int, ...]

    @property
    def widths(self) -> tuple[int, ...]:
        """G_k: the groups (times B, the rows) each of the n + 1 segments runs on."""
        widths = [1]
        for branch in self.branches:
            widths.append(widths[-1] if branch is None else len(branch.parents))
        return tuple(widths)


def _key(value: Alpha | None) -> Hashable:
    """Equal keys give equal alphas: None (the own alpha), a number, or one tensor object."""
    if value is None:
        return None
    return ("tensor", id(value)) if isinstance(value, Tensor) else float(value)


def variant_tree(variants: Sequence[Mapping[str, Alpha]], slots: Sequence[tuple[str, bool]]) -> VariantTree:
    """The tree of `variants` over `slots`, (slot id, holds a module) in host order.

    Groups are numbered in order of their first variant, so variant 0 always sits in group 0.
    """
    group_of = [0] * len(variants)
    branches: list[Branch | None] = []
    for slot_id, has_module in slots:
        if not has_module:
            branches.append(None)  # identity whatever the override (only 0 is allowed there)
            continue
        n_in = max(group_of, default=0) + 1
        children: dict[tuple[int, Hashable], int] = {}
        parents: list[int] = []
        alphas: list[Alpha | None] = []
        for v, variant in enumerate(variants):
            value = variant.get(slot_id)
            child = children.setdefault((group_of[v], _key(value)), len(children))
            if child == len(parents):
                parents.append(group_of[v])
                alphas.append(value)
            group_of[v] = child
        branches.append(Branch(tuple(parents), tuple(alphas), n_in))
    return VariantTree(tuple(branches), tuple(group_of))


def run_tree(host: Host, slots: Sequence[BranchingSlot], x: Tensor, tree: VariantTree) -> Tensor:
    """Every variant's output, (V, B, …): the segment chain over the tree's groups."""
    batch = x.shape[0]
    h = host.segment(0, x)
    for k, (slot, branch) in enumerate(zip(slots, tree.branches, strict=True)):
        if branch is not None:
            h = _branch(slot, branch, h, batch)
        h = host.segment(k + 1, h)
    n_groups = tree.widths[-1]
    if tree.leaves != tuple(range(n_groups)):
        h = _take(h, tree.leaves, batch)
    return h.unflatten(0, (len(tree.leaves), batch))


def _branch(slot: BranchingSlot, branch: Branch, h: Tensor, batch: int) -> Tensor:
    """δ once per entering group, then each leaving group blends its parent's rows with its alpha."""
    d = slot.delta(h)
    if branch.splits:
        h, d = _take(h, branch.parents, batch), _take(d, branch.parents, batch)
    return slot.mix(h, d, _group_alphas(slot, branch.alphas, batch))


def _group_alphas(slot: BranchingSlot, alphas: Sequence[Alpha | None], batch: int) -> Tensor | None:
    """A per-sample alpha (G·B,) when any group overrides the slot; None keeps the 0-dim own alpha."""
    if all(a is None for a in alphas):
        return None
    per_group = torch.stack([slot.alpha if a is None else on_device(a, slot.alpha) for a in alphas])
    return per_group.repeat_interleave(batch)


def _take(rows: Tensor, groups: Sequence[int], batch: int) -> Tensor:
    """The rows of `groups` in order (group g = rows g·B … (g+1)·B): one copy of contiguous slices,
    no index tensor (an index built from a list would be a host→device copy on a GPU)."""
    runs: list[list[int]] = []
    for g in groups:
        if runs and runs[-1][1] == g:
            runs[-1][1] = g + 1
        else:
            runs.append([g, g + 1])
    if len(runs) == 1:
        start, stop = runs[0]
        return rows[start * batch:stop * batch]
    return torch.cat([rows[start * batch:stop * batch] for start, stop in runs])


def on_device(value: Alpha, like: Tensor) -> Tensor:
    """`value` as a tensor of `like`'s dtype and device; a number becomes a fill kernel, not a
    host→device copy (which would block the host on a GPU)."""
    if isinstance(value, Tensor):
        return value.to(dtype=like.dtype, device=like.device)
    return torch.full_like(like, float(value))
