"""What the shell measured at a boundary, and what the lifecycle asks it to measure (docs/lifecycle.md §2.4).

`contribution = acc(real) − acc(slot α→0)`; `shadow_gain = acc(slot α→1) − acc(real)`;
both fractions, measured on the full held-out split in one batched pass.
"""

import attrs


@attrs.frozen(kw_only=True)
class SlotMeasurement:
    slot_id: str
    contribution: float | None = None
    shadow_gain: float | None = None
    grad_ratio: float | None = None
    seed_finite: bool = True


@attrs.frozen(kw_only=True)
class EpochMeasurements:
    epoch: int
    val_acc: float
    slots: tuple[SlotMeasurement, ...] = attrs.field(default=(), converter=tuple)

    def for_slot(self, slot_id: str) -> SlotMeasurement:
        """The slot's measurement; a slot the shell did not report has every input missing."""
        for m in self.slots:
            if m.slot_id == slot_id:
                return m
        return SlotMeasurement(slot_id=slot_id)


@attrs.frozen(kw_only=True)
class SlotPlan:
    """Which inputs the shell must measure for one slot during the coming epoch."""

    slot_id: str
    contribution: bool = False
    shadow_gain: bool = False
    grad_ratio: bool = False
    finite: bool = False

    @property
    def any(self) -> bool:
        return self.contribution or self.shadow_gain or self.grad_ratio or self.finite


@attrs.frozen
class MeasurementPlan:
    slots: tuple[SlotPlan, ...]

    def for_slot(self, slot_id: str) -> SlotPlan:
        return next(p for p in self.slots if p.slot_id == slot_id)
