"""Hosts: the networks seeds grow in (docs/lifecycle.md §7), their plain-data configs and presets.

`host_for(preset, generator, **overrides)` builds a preset's host; `build_host(config, generator)`
rebuilds one from its config (what checkpoints store: `codec.encode(config)`, read back with
`codec.decode(HostConfig, data)`, which dispatches on the record's `kind`). The CNN host lives
here, the transformer host in `transformer_host`.
"""

from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from esper.core import codec
from esper.core.errors import HostConfigError
from esper.core.seed import SlotSpec
from esper.shell.nets.host_base import (
    Host,
    SlotLayout,
    block_spans,
    default_init_,
    is_int,
    materialise,
    require_positive,
    to_layout,
    validate_layout,
)
from esper.shell.nets.transformer_host import TransformerHost, TransformerHostConfig

__all__ = [
    "HOST_ALIASES",
    "HOST_PRESETS",
    "CNNHost",
    "CNNHostConfig",
    "Host",
    "HostConfig",
    "TransformerHost",
    "TransformerHostConfig",
    "build_host",
    "host_config",
    "host_for",
]

THREE_SLOTS: SlotLayout = (("early", 0), ("mid", 1), ("late", 2))


@attrs.frozen(kw_only=True)
class CNNHostConfig:
    """Block i: conv3×3 (no bias) c_{i−1} → c_i = width·2^i, BatchNorm, ReLU, then MaxPool2d(2)
    if i < pool_layers; head: global average pool → Linear(c_{N−1}, n_classes)."""

    KIND = "cnn"

    input_shape: tuple[int, int, int] = attrs.field(converter=tuple)  # (C, H, W) per sample
    n_classes: int
    n_blocks: int
    width: int
    pool_layers: int = attrs.field()
    slots: SlotLayout = attrs.field(default=THREE_SLOTS, converter=to_layout)

    @pool_layers.default
    def _every_block(self) -> int:
        return self.n_blocks

    def __attrs_post_init__(self) -> None:
        if len(self.input_shape) != 3:
            raise HostConfigError(f"cnn host: input_shape must be (C, H, W), got {self.input_shape}")
        channels, height, width = self.input_shape
        require_positive("cnn host", channels=channels, height=height, image_width=width,
                         n_classes=self.n_classes, n_blocks=self.n_blocks, width=self.width)
        if not is_int(self.pool_layers) or not 0 <= self.pool_layers <= self.n_blocks:
            raise HostConfigError(f"cnn host: pool_layers {self.pool_layers!r} outside 0…{self.n_blocks}")
        if min(height, width) >> self.pool_layers < 1:
            raise HostConfigError(f"cnn host: {self.pool_layers} pools shrink {height}×{width} to nothing")
        validate_layout(self.slots, self.n_blocks)

    def channels(self, i: int) -> int:
        """c_i; c_{−1} is the input's channel count."""
        return self.input_shape[0] if i < 0 else self.width * 2**i

    def spatial(self, i: int) -> tuple[int, int]:
        """Height and width of block i's output (MaxPool2d(2) floors odd sizes: 7 → 3)."""
        pools = min(i + 1, self.pool_layers)
        return self.input_shape[1] >> pools, self.input_shape[2] >> pools

    def param_count(self) -> int:
        """Σ_i (9·c_{i−1}·c_i + 2·c_i) + n_cls·(c_{N−1} + 1)."""
        blocks = sum(9 * self.channels(i - 1) * self.channels(i) + 2 * self.channels(i)
                     for i in range(self.n_blocks))
        return blocks + self.n_classes * (self.channels(self.n_blocks - 1) + 1)

    def slot_specs(self) -> tuple[SlotSpec, ...]:
        return tuple(SlotSpec(name, k, i, self.channels(i), (self.channels(i), *self.spatial(i)))
                     for k, (name, i) in enumerate(self.slots))


HostConfig = CNNHostConfig | TransformerHostConfig
# A malformed checkpoint record of either kind is a HostConfigError, like a bad override.
codec.register_error(CNNHostConfig, HostConfigError, "bad cnn host config")
codec.register_error(TransformerHostConfig, HostConfigError, "bad transformer host config")
codec.register_error(HostConfig, HostConfigError, "bad host config")


class CNNHost(Host):
    """The image host (docs/lifecycle.md §7.2). Input (B, C, H, W) float; output (B, n_classes) logits."""

    def __init__(self, config: CNNHostConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.config = config
        self.slot_specs = config.slot_specs()
        self.spans = block_spans((spec.position for spec in self.slot_specs), config.n_blocks)
        with torch.device("meta"):  # no constructor may draw from the global RNG
            self.blocks = nn.ModuleList(_block(config, i) for i in range(config.n_blocks))
            self.head = nn.Sequential(OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                fc=nn.Linear(config.channels(config.n_blocks - 1), config.n_classes),
            ))
        materialise(self, generator)
        self._init(generator)

    def _init(self, generator: torch.Generator) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                default_init_(module, generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()  # weight 1, bias 0, running stats reset: no randomness

    def _segment(self, k: int, x: Tensor) -> Tensor:
        start, stop = self.spans[k]
        for block in self.blocks[start:stop]:
            x = block(x)
        return self.head(x) if k == self.n_slots else x


def _block(config: CNNHostConfig, i: int) -> nn.Sequential:
    c_in, c_out = config.channels(i - 1), config.channels(i)
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        bn=nn.BatchNorm2d(c_out),
        relu=nn.ReLU(),
    )
    if i < config.pool_layers:
        layers["pool"] = nn.MaxPool2d(2, 2)
    return nn.Sequential(layers)


# --- presets and construction ----------------------------------------------------------------

HOST_PRESETS: Mapping[str, HostConfig] = MappingProxyType({
    "cifar10": CNNHostConfig(input_shape=(3, 32, 32), n_classes=10, n_blocks=3, width=8),
    "cifar10-deep": CNNHostConfig(input_shape=(3, 32, 32), n_classes=10, n_blocks=5, width=8),
    "fashion-mnist": CNNHostConfig(input_shape=(1, 28, 28), n_classes=10, n_blocks=3, width=8),
    "tinystories": TransformerHostConfig(
        vocab_size=50_257, block_size=256, d_model=384, n_layers=6, n_heads=6, dropout=0.1,
        slots=(("early", 1), ("mid", 3), ("late", 5)),
    ),
    "synth-stories": TransformerHostConfig(
        vocab_size=256, block_size=128, d_model=128, n_layers=3, n_heads=4, dropout=0.0, slots=THREE_SLOTS,
    ),
    "tiny": TransformerHostConfig(
        vocab_size=256, block_size=64, d_model=64, n_layers=3, n_heads=4, dropout=0.0, slots=THREE_SLOTS,
    ),
})
# Task presets that share another preset's host (docs/runtime.md §5.1).
HOST_ALIASES: Mapping[str, str] = MappingProxyType({"synth-images": "cifar10"})


def host_config(preset: str, **overrides: Any) -> HostConfig:
    """The config of a preset's host, with fields replaced by `overrides` (validated).

    `slots=` takes any layout the host allows: {name: position}, [(name, position), …] or bare
    positions (named `slot<position>`); `()` gives the static baseline with no slot.
    """
    name = HOST_ALIASES.get(preset, preset)
    if name not in HOST_PRESETS:
        known = ", ".join([*HOST_PRESETS, *HOST_ALIASES])
        raise HostConfigError(f"unknown host preset {preset!r}; known: {known}")
    base = HOST_PRESETS[name]
    fields = attrs.fields_dict(type(base))
    if unknown := sorted(set(overrides) - set(fields)):
        raise HostConfigError(f"{preset} host has no field(s) {unknown}; fields: {', '.join(fields)}")
    if isinstance(base, CNNHostConfig) and "n_blocks" in overrides:
        overrides.setdefault("pool_layers", overrides["n_blocks"])  # still a pool after every block
    try:
        return attrs.evolve(base, **overrides)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, HostConfigError):
            raise
        raise HostConfigError(f"bad override for the {preset} host: {exc}") from exc


def host_for(preset: str, generator: torch.Generator, *, dropout_generator: torch.Generator | None = None,
             **overrides: Any) -> Host:
    """Build the host of a preset (see `host_config` for `overrides`), initialised from `generator`;
    its dropout (if any) draws from `dropout_generator`."""
    return build_host(host_config(preset, **overrides), generator, dropout_generator)


def build_host(config: HostConfig, generator: torch.Generator,
               dropout_generator: torch.Generator | None = None) -> Host:
    """Rebuild the architecture a config describes; the same generator state gives the same weights.
    `dropout_generator` draws every dropout mask (the CNN host has none); see `TransformerHost`."""
    if isinstance(config, CNNHostConfig):
        return CNNHost(config, generator)
    if isinstance(config, TransformerHostConfig):
        return TransformerHost(config, generator, dropout_generator)
    raise HostConfigError(f"not a host config: {config!r}")
