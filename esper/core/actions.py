"""The factored action space (docs/lifecycle.md §9, docs/rl.md §3): op, slot, blueprint, tempo.

Heads an op does not use are irrelevant: `act` ignores them, and the masks offer them a
one-hot-at-0 dummy row, so an irrelevant head has exactly one choice.
"""

from enum import IntEnum

import attrs


class Op(IntEnum):
    WAIT = 0
    GERMINATE = 1
    CULL = 2
    FOSSILIZE = 3

    def __str__(self) -> str:
        return self.name


HEADS = ("op", "slot", "blueprint", "tempo")

# Which heads each op reads: (op, slot, blueprint, tempo).
RELEVANCE: dict[Op, tuple[bool, bool, bool, bool]] = {
    Op.WAIT: (True, False, False, False),
    Op.GERMINATE: (True, True, True, True),
    Op.CULL: (True, True, False, False),
    Op.FOSSILIZE: (True, True, False, False),
}


@attrs.frozen
class FactoredAction:
    """One controller decision; `blueprint` indexes the catalogue's germinable list,
    `tempo` indexes the config's `tempo_choices`."""

    op: Op = attrs.field(converter=Op)
    slot: int = 0
    blueprint: int = 0
    tempo: int = 0

    @classmethod
    def wait(cls) -> "FactoredAction":
        return cls(Op.WAIT)

    @classmethod
    def germinate(cls, slot: int, blueprint: int, tempo: int = 0) -> "FactoredAction":
        return cls(Op.GERMINATE, slot, blueprint, tempo)

    @classmethod
    def cull(cls, slot: int) -> "FactoredAction":
        return cls(Op.CULL, slot)

    @classmethod
    def fossilize(cls, slot: int) -> "FactoredAction":
        return cls(Op.FOSSILIZE, slot)

    def canonical(self) -> "FactoredAction":
        """Irrelevant heads set to 0, as the masks' dummy rows would sample them."""
        _, uses_slot, uses_bp, uses_tempo = RELEVANCE[self.op]
        return FactoredAction(
            self.op,
            self.slot if uses_slot else 0,
            self.blueprint if uses_bp else 0,
            self.tempo if uses_tempo else 0,
        )

    def __str__(self) -> str:
        fields = ("slot", "blueprint", "tempo")
        used = [f"{n}={getattr(self, n)}" for n, u in zip(fields, RELEVANCE[self.op][1:], strict=True) if u]
        return f"{self.op.name}({', '.join(used)})" if used else self.op.name


Row = tuple[bool, ...]


@attrs.frozen
class ActionMasks:
    """Legality per head: op[4], slot[4][S], blueprint[S][K], tempo[len(tempo_choices)]."""

    op: Row
    slot: tuple[Row, ...]
    blueprint: tuple[Row, ...]
    tempo: Row

    def allows(self, action: FactoredAction) -> bool:
        """True iff every head the op uses is allowed (irrelevant heads are not read)."""
        _, uses_slot, uses_bp, uses_tempo = RELEVANCE[action.op]
        n_slots, n_bp, n_tempo = len(self.blueprint), len(self.blueprint[0]), len(self.tempo)
        if not self.op[action.op]:
            return False
        if uses_slot and not (0 <= action.slot < n_slots and self.slot[action.op][action.slot]):
            return False
        if uses_bp and not (0 <= action.blueprint < n_bp and self.blueprint[action.slot][action.blueprint]):
            return False
        return not uses_tempo or (0 <= action.tempo < n_tempo and self.tempo[action.tempo])

    def allowed_actions(self) -> tuple[FactoredAction, ...]:
        """Every canonical action the masks allow (irrelevant heads at 0), in head order."""
        out: list[FactoredAction] = [FactoredAction.wait()]
        for s, ok in enumerate(self.slot[Op.GERMINATE]):
            if ok:
                out += [
                    FactoredAction.germinate(s, k, t)
                    for k, bp_ok in enumerate(self.blueprint[s]) if bp_ok
                    for t, t_ok in enumerate(self.tempo) if t_ok
                ]
        for op in (Op.CULL, Op.FOSSILIZE):
            out += [FactoredAction(op, s) for s, ok in enumerate(self.slot[op]) if ok]
        return tuple(out)
