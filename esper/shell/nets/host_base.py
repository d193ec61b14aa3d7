"""The host contract shared by every host (docs/lifecycle.md §7.1): slot layouts and segment forwards.

A host is a stack of `n_blocks` blocks between a stem and a head. A slot at position i sees
the features right after block i, so `n` slots with positions p_0 < … < p_{n−1} cut the stack
into `n + 1` segments: seg_0 = stem + blocks 0…p_0, seg_k = blocks p_{k−1}+1 … p_k, and
seg_n = the remaining blocks + head. `forward` is literally that chain, so running the
segments one by one equals `host(x)` bit for bit.
"""

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from esper.core.errors import HostConfigError
from esper.core.seed import SlotSpec

SLOT_NAME = re.compile(r"[a-z][a-z0-9_]*")

SlotLayout = tuple[tuple[str, int], ...]  # (name, position) pairs in host order


def to_layout(slots: Any) -> SlotLayout:
    """Normalise a slot layout: a mapping name → position, (name, position) pairs, or bare positions.

    Bare positions get the name `slot<position>`. JSON gives lists, so pairs may be lists too.
    """
    items: Iterable[Any] = slots.items() if isinstance(slots, Mapping) else slots
    try:
        pairs = [(f"slot{item}", item) if is_int(item) else tuple(item) for item in items]
    except TypeError as exc:
        raise HostConfigError(f"slot layout must be pairs (name, position), got {slots!r}") from exc
    for pair in pairs:
        if len(pair) != 2:
            raise HostConfigError(f"slot entry {pair!r} is not a (name, position) pair")
    return tuple((name, position) for name, position in pairs)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_layout(slots: SlotLayout, n_positions: int) -> None:
    """Names unique and matching `[a-z][a-z0-9_]*`; positions ints, strictly increasing, in range."""
    names = [name for name, _ in slots]
    for name in names:
        if not isinstance(name, str) or not SLOT_NAME.fullmatch(name):
            raise HostConfigError(f"slot name {name!r} does not match [a-z][a-z0-9_]*")
    if len(set(names)) != len(names):
        raise HostConfigError(f"slot names must be unique, got {names}")
    positions = [position for _, position in slots]
    for position in positions:
        if not is_int(position) or not 0 <= position < n_positions:
            raise HostConfigError(f"slot position {position!r} outside 0…{n_positions - 1}")
    if any(b <= a for a, b in itertools.pairwise(positions)):
        raise HostConfigError(f"slot positions must be strictly increasing, got {positions}")


def block_spans(positions: Iterable[int], n_blocks: int) -> tuple[tuple[int, int], ...]:
    """Half-open block ranges of the n + 1 segments (the last one runs to the end of the stack)."""
    cuts = [position + 1 for position in positions]
    starts = [0, *cuts]
    stops = [*cuts, n_blocks]
    return tuple(zip(starts, stops, strict=True))


def require_positive(owner: str, **values: Any) -> None:
    for key, value in values.items():
        if not is_int(value) or value < 1:
            raise HostConfigError(f"{owner}: {key} must be a positive int, got {value!r}")


class Host(nn.Module):
    """Base of every host: `slot_specs`, `n_slots`, `segment(k, x)` and `forward` = the segment chain.

    Subclasses set `config`, `slot_specs` and `spans` and implement `_segment`.
    """

    config: Any
    slot_specs: tuple[SlotSpec, ...]
    spans: tuple[tuple[int, int], ...]

    @property
    def n_slots(self) -> int:
        return len(self.slot_specs)

    def segment(self, k: int, x: Tensor) -> Tensor:
        """seg_0(x) → features at slot 0, seg_k(h) → features at slot k, seg_n(h) → output."""
        if not 0 <= k <= self.n_slots:
            raise IndexError(f"segment {k} outside 0…{self.n_slots}")
        return self._segment(k, x)

    def _segment(self, k: int, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        for k in range(self.n_slots + 1):
            x = self.segment(k, x)
        return x


def materialise(module: nn.Module, generator: torch.Generator) -> None:
    """Give a module built on the meta device real (uninitialised) storage on the generator's device.

    Hosts are built under `torch.device("meta")` so that no layer constructor draws from the
    global RNG; every value is then written by the host's own init from `generator`. The
    caller picks the device by picking the generator.
    """
    module.to_empty(device=generator.device)


def default_init_(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default scheme for conv / linear layers, drawn from `generator` instead of the global RNG."""
    weight, bias = module.weight, getattr(module, "bias", None)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if bias is not None:
        fan_in = weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(bias, -bound, bound, generator=generator)
