"""The blueprint catalogue as data (docs/lifecycle.md §6): names, parameter formulas, constraints.

A catalogue is a frozen value built by `catalogue_for(topology)`; there is no global registry.
The built-in modules live in `esper.shell.nets.blueprints`, whose tests pin each module's
parameter count to the formula here. The blueprint action head indexes `germinable`
(every entry but `noop`).

`Catalogue.with_blueprint` extends a catalogue explicitly: it returns a new frozen catalogue whose
last entry carries its own builder `dim -> module`. The core keeps that builder opaque (it never
calls it and never imports the shell); `esper.shell.nets.blueprint_check.register` checks the
contract on a probe host before handing the extended catalogue out.
"""

import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from esper.core.errors import ConfigError, UnknownBlueprintError

TOPOLOGIES = ("cnn", "transformer", "mlp")
BLUEPRINT_NAME = re.compile(r"[a-z][a-z0-9_]*")


@attrs.frozen
class BlueprintSpec:
    index: int
    name: str
    params: Callable[[int], int]  # parameter count at slot dim C (channels) or D (width)
    constraint: Callable[[int], bool] = attrs.field(factory=lambda: _positive)
    # A user blueprint's builder dim -> module (opaque here); None: the shell's built-in module.
    build: Callable[[int], Any] | None = None

    def fits(self, dim: int) -> bool:
        return self.constraint(dim)


def _positive(dim: int) -> bool:
    return dim >= 1


def reduced_width(c: int) -> int:
    """SE reduction r and bottleneck width b: max(4, C // 4)."""
    return max(4, c // 4)


def _cnn_entries() -> tuple[BlueprintSpec, ...]:
    formulas: list[tuple[str, Callable[[int], int]]] = [
        ("noop", lambda c: 0),
        ("norm", lambda c: 2 * c + 1),
        ("attention", lambda c: 2 * c * reduced_width(c)),
        ("depthwise", lambda c: c * c + 11 * c),
        ("bottleneck", lambda c: 2 * c * reduced_width(c) + 9 * reduced_width(c) ** 2 + 2 * reduced_width(c)),
        ("conv_light", lambda c: 9 * c * c + 2 * c),
        ("conv_heavy", lambda c: 18 * c * c + 4 * c),
    ]
    return tuple(BlueprintSpec(i, name, f) for i, (name, f) in enumerate(formulas))


def _transformer_entries() -> tuple[BlueprintSpec, ...]:
    return (
        BlueprintSpec(0, "noop", lambda d: 0),
        BlueprintSpec(1, "norm", lambda d: 2 * d + 1),
        BlueprintSpec(2, "lora", lambda d: 16 * d),
        BlueprintSpec(3, "attention", lambda d: 4 * d * d + 6 * d, lambda d: d >= 4 and d % 4 == 0),
        BlueprintSpec(4, "mlp", lambda d: 8 * d * d + 7 * d),
    )


def _mlp_entries() -> tuple[BlueprintSpec, ...]:
    """Flat features (N, D): the transformer's per-token modules applied per sample."""
    return (
        BlueprintSpec(0, "noop", lambda d: 0),
        BlueprintSpec(1, "norm", lambda d: 2 * d + 1),
        BlueprintSpec(2, "lora", lambda d: 16 * d),
        BlueprintSpec(3, "mlp", lambda d: 8 * d * d + 7 * d),
    )


@attrs.frozen
class Catalogue:
    topology: str
    entries: tuple[BlueprintSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    @property
    def germinable(self) -> tuple[BlueprintSpec, ...]:
        """Entries the blueprint head can choose, in catalogue order (never `noop`)."""
        return tuple(e for e in self.entries if e.name != "noop")

    def index_of(self, name: str) -> int:
        return self.spec(name).index

    def spec(self, name: str) -> BlueprintSpec:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise UnknownBlueprintError(self.topology, name, self.names)

    def germinable_index(self, name: str) -> int:
        """Blueprint-head index k of a germinable name."""
        for k, entry in enumerate(self.germinable):
            if entry.name == name:
                return k
        raise UnknownBlueprintError(self.topology, name, tuple(e.name for e in self.germinable))

    def with_blueprint(self, name: str, build: Callable[[int], Any], params: Callable[[int], int],
                       fits: Callable[[int], bool] | None = None) -> "Catalogue":
        """A new catalogue with `name` appended (germinable index = its position among germinables).

        `build(dim)` makes the seed's delta module δ (zero at birth: s(h) = h + δ(h)), `params(dim)`
        its parameter count, `fits(dim)` whether it may grow at a slot of that dim (default: dim ≥ 1).
        Only the names and callables are checked here; the module contract is checked by the shell.
        """
        if not isinstance(name, str) or not BLUEPRINT_NAME.fullmatch(name):
            raise ConfigError(f"blueprint name {name!r} does not match [a-z][a-z0-9_]*")
        if name in self.names:
            raise ConfigError(f"{self.topology} catalogue already has a blueprint {name!r}")
        for role, value in (("build", build), ("params", params), ("fits", fits)):
            if value is not None and not callable(value):
                raise ConfigError(f"blueprint {name!r}: {role} must be callable, got {value!r}")
        spec = BlueprintSpec(len(self.entries), name, params, fits or _positive, build)
        return Catalogue(self.topology, (*self.entries, spec))


# Built once, so that two catalogues of one topology compare equal (their formulas are shared).
_ENTRIES = {"cnn": _cnn_entries(), "transformer": _transformer_entries(), "mlp": _mlp_entries()}


def catalogue_for(topology: str) -> Catalogue:
    if topology in _ENTRIES:
        return Catalogue(topology, _ENTRIES[topology])
    raise ConfigError(f"unknown topology {topology!r}; expected one of {TOPOLOGIES}")


# A validation entry: True = probed and passed, False = probe failed, None = no entry (unfit).
Entry = bool | None


@attrs.frozen
class ValidationTable:
    """Per slot, per catalogue entry: did the built blueprint pass its probe (docs/lifecycle.md §6.4)?

    G0 reads presence (an entry exists: the pair fits); G1 reads the probe result.
    """

    entries: tuple[tuple[Entry, ...], ...]

    def status(self, slot_index: int, blueprint_index: int) -> Entry:
        return self.entries[slot_index][blueprint_index]

    @classmethod
    def from_constraints(cls, catalogue: Catalogue, dims: Sequence[int]) -> "ValidationTable":
        """A table from the formulas alone: every pair whose constraint holds counts as passed."""
        return cls(tuple(tuple(True if e.fits(d) else None for e in catalogue.entries) for d in dims))
