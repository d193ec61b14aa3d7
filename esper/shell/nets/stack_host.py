"""Any stack of blocks as a host (docs/lifecycle.md §7.4): the user's own network, with named slots.

A stack host is `stem → block_0 → … → block_{N−1} → head` (stem and head default to the identity)
cut at the slot positions like every host (`host_base`): slot k at position p_k sees the output of
block p_k, seg_0 = stem + blocks 0…p_0, seg_n = the remaining blocks + head. The segments run the
very modules of the stack in the same order, so chaining them equals the unsplit stack bit for bit.

Shapes come from one probe forward of a sample batch (eval mode, no gradient, every module's train
flag restored, so BatchNorm statistics and the RNG are untouched). The features' rank picks the
catalogue topology, one per host:

    (N, C, H, W) → "cnn"          dim = C, feature_shape = (C, H, W)
    (N, T, D)    → "transformer"  dim = D, feature_shape = (T, D)   (T of the sample)
    (N, D)       → "mlp"          dim = D, feature_shape = (D,)

The host's weights are the user's modules as they are: the stack host neither copies nor re-initialises them.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from esper.core.errors import HostConfigError
from esper.core.seed import SlotSpec
from esper.shell.nets.host_base import Host, SlotLayout, block_spans, to_layout, validate_layout

KIND_BY_RANK = {4: "cnn", 3: "transformer", 2: "mlp"}  # rank of the batched features → topology


def _shapes(value: Iterable[Iterable[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(n) for n in shape) for shape in value)


@attrs.frozen(kw_only=True)
class StackHostConfig:
    """What the probe forward found: plain data (hashable, a stable repr), so compile and FLOPs keys work."""

    kind: str  # the catalogue topology of the slots' features
    n_blocks: int
    input_shape: tuple[int, ...] = attrs.field(converter=lambda s: tuple(int(n) for n in s))  # per sample
    slots: SlotLayout = attrs.field(converter=to_layout)
    feature_shapes: tuple[tuple[int, ...], ...] = attrs.field(converter=_shapes)  # per slot, per sample

    def __attrs_post_init__(self) -> None:
        if self.kind not in KIND_BY_RANK.values():
            raise HostConfigError(f"stack host: kind {self.kind!r} not in {tuple(KIND_BY_RANK.values())}")
        validate_layout(self.slots, self.n_blocks)
        if len(self.feature_shapes) != len(self.slots):
            raise HostConfigError(f"stack host: {len(self.feature_shapes)} feature shapes for "
                                  f"{len(self.slots)} slots")

    @property
    def KIND(self) -> str:  # the name every host config answers to (MorphogeneticModel reads it)
        return self.kind

    def slot_specs(self) -> tuple[SlotSpec, ...]:
        dim_axis = 0 if self.kind == "cnn" else -1
        return tuple(SlotSpec(name, k, position, shape[dim_axis], shape)
                     for k, ((name, position), shape) in enumerate(zip(self.slots, self.feature_shapes,
                                                                        strict=True)))


class StackHost(Host):
    """`stem`, `blocks` (an nn.ModuleList) and `head` of the user's modules; slots after named blocks."""

    def __init__(self, blocks: Sequence[nn.Module], slots: Any, sample: Tensor, *,
                 stem: nn.Module | None = None, head: nn.Module | None = None) -> None:
        super().__init__()
        layout = to_layout(slots)
        if not layout:
            raise HostConfigError("a stack host needs at least one slot (name → block position)")
        validate_layout(layout, len(blocks))
        self.stem = nn.Identity() if stem is None else stem
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Identity() if head is None else head
        self.spans = block_spans((position for _, position in layout), len(self.blocks))
        shapes = self._probe(sample)
        self.config = StackHostConfig(kind=_kind(layout, shapes), n_blocks=len(self.blocks),
                                      input_shape=sample.shape[1:], slots=layout, feature_shapes=shapes)
        self.slot_specs = self.config.slot_specs()

    def _segment(self, k: int, x: Tensor) -> Tensor:
        start, stop = self.spans[k]
        if k == 0:
            x = self.stem(x)
        for block in self.blocks[start:stop]:
            x = block(x)
        return self.head(x) if k == len(self.spans) - 1 else x

    def _probe(self, sample: Tensor) -> tuple[tuple[int, ...], ...]:
        """Per-sample feature shapes at every slot, from one forward of `sample` that changes nothing."""
        if not isinstance(sample, Tensor) or sample.dim() < 1 or sample.shape[0] < 1:
            raise HostConfigError("stack host: the sample must be a batch tensor (N, …) with N ≥ 1")
        modes = [(module, module.training) for module in self.modules()]
        shapes = []
        try:
            self.eval()
            with torch.no_grad():
                x = sample
                for k in range(len(self.spans) - 1):
                    x = self._segment(k, x)
                    shapes.append(tuple(x.shape))
        finally:
            for module, training in modes:
                module.training = training
        return tuple(shape[1:] for shape in shapes)


def _kind(layout: SlotLayout, shapes: Sequence[tuple[int, ...]]) -> str:
    """The one topology of every slot's features, or a HostConfigError naming the odd slots."""
    kinds = {name: KIND_BY_RANK.get(len(shape) + 1) for (name, _), shape in zip(layout, shapes, strict=True)}
    found = {f"{name} {(-1, *shape)}" for (name, _), shape in zip(layout, shapes, strict=True)
             if kinds[name] is None}
    if found:
        raise HostConfigError(f"stack host: slot features must be (N, C, H, W), (N, T, D) or (N, D); "
                              f"got {', '.join(sorted(found))}")
    if len(set(kinds.values())) > 1:
        raise HostConfigError(f"stack host: all slots need one kind of feature, got {kinds}; "
                              f"move the slots so they all see conv, token or flat features")
    return next(iter(kinds.values()))  # type: ignore[return-value]


def host_from_stack(blocks: nn.Sequential | Sequence[nn.Module], slots: Any, *, sample: Tensor,
                    stem: nn.Module | None = None, head: nn.Module | None = None) -> StackHost:
    """A host made of `blocks` (an nn.Sequential's children, or a list) with `slots` after named blocks.

    `slots`: {name: block index}, (name, index) pairs or bare indices (named `slot<index>`),
    strictly increasing. `sample`: a batch like the training inputs, run once to read the slots'
    feature shapes. `stem` runs before block 0, `head` after the last block.
    """
    modules = list(blocks.children()) if isinstance(blocks, nn.Sequential) else list(blocks)
    if not modules or not all(isinstance(m, nn.Module) for m in modules):
        raise HostConfigError("stack host: blocks must be a non-empty nn.Sequential or list of nn.Module")
    return StackHost(modules, slots, sample, stem=stem, head=head)
