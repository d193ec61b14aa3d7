"""An epoch's numbers, launched on the device and fetched to the host (docs/runtime.md §2.1 steps 0–3).

    layout   EpochLayout.of(plan): the validation variants and where each slot's counterfactuals sit
    launch   LaunchedEpoch: device tensors only (train sums, per-variant validation sums, finiteness)
    fetch    LaunchedEpoch.fetch(): one device→host copy of all of them → EpochNumbers

Variant 0 is the real model; then, per slot of the plan in host order, its α→0 ablation (when the
plan asks for the contribution) and its α→1 shadow (the shadow gain). With acc_v = correct_v / n:

    contribution = acc_0 − acc_ablate          shadow_gain = acc_shadow − acc_0          (fractions)
    grad_ratio   = gradient_ratio(S_seed, S_host, P_seed, P_host) (docs/lifecycle.md §3.2), None where
                   the ratio is invalid or non-finite; train loss and accuracy are means per sample.
"""

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
from torch import Tensor

from esper.core.gates import gradient_ratio
from esper.core.measurements import EpochMeasurements, MeasurementPlan, SlotMeasurement, SlotPlan
from esper.shell.epoch import TrainSums, ValidationSums
from esper.shell.fetch import fetch

Variant = Mapping[str, float]  # α overrides of one validation pass; {} = the real model


@attrs.frozen
class VariantIndex:
    """Where one slot's counterfactual passes sit among the validation variants (None: not run)."""

    ablate: int | None = None
    shadow: int | None = None


@attrs.frozen
class EpochLayout:
    """What one epoch measures, in the order the device computes it and the host reads it."""

    plan: MeasurementPlan
    variants: tuple[Variant, ...]
    index: Mapping[str, VariantIndex]  # every slot the plan measures anything of

    @classmethod
    def of(cls, plan: MeasurementPlan) -> "EpochLayout":
        variants: list[Variant] = [{}]
        index: dict[str, VariantIndex] = {}
        for slot in plan.slots:
            if not slot.any:
                continue
            ablate = shadow = None
            if slot.contribution:
                ablate = len(variants)
                variants.append({slot.slot_id: 0.0})
            if slot.shadow_gain:
                shadow = len(variants)
                variants.append({slot.slot_id: 1.0})
            index[slot.slot_id] = VariantIndex(ablate, shadow)
        return cls(plan, tuple(variants), index)

    @property
    def measured(self) -> tuple[str, ...]:
        """Slots whose seed gradients training sums (for the gradient ratio or the finiteness check)."""
        return tuple(p.slot_id for p in self.plan.slots if p.grad_ratio or p.finite)

    def slot_measurement(self, plan: SlotPlan, acc: list[float], fetched: "SlotFetched | None") -> SlotMeasurement:
        where = self.index[plan.slot_id]
        ratio = None
        if fetched is not None and plan.grad_ratio and fetched.ratio_valid and np.isfinite(fetched.grad_ratio):
            ratio = fetched.grad_ratio
        return SlotMeasurement(
            slot_id=plan.slot_id,
            contribution=acc[0] - acc[where.ablate] if where.ablate is not None else None,
            shadow_gain=acc[where.shadow] - acc[0] if where.shadow is not None else None,
            grad_ratio=ratio, seed_finite=fetched.finite if fetched is not None else True)


@attrs.frozen
class SlotFetched:
    """One measured slot's gradient ratio, its validity and the finiteness check, as fetched."""

    grad_ratio: float
    ratio_valid: bool
    finite: bool


@attrs.frozen
class EpochNumbers:
    """The fetched numbers of one epoch (host-side), all a governor, tracker and record need."""

    train_loss: float  # mean cross-entropy per training sample (per token for text)
    train_acc: float
    train_count: float  # samples (tokens) trained on
    val_loss: float  # the real model's, on the full held-out split
    val_acc: float
    slots: tuple[SlotMeasurement, ...] = ()  # every slot the plan measures, in host order
    diag: Any = None  # LaunchedEpoch.diag as Python numbers (esper.shell.diagnostics)

    def measurements(self, epoch: int) -> EpochMeasurements:
        val_acc = self.val_acc if np.isfinite(self.val_acc) else 0.0
        return EpochMeasurements(epoch=epoch, val_acc=val_acc, slots=self.slots)


@attrs.frozen
class LaunchedEpoch:
    """An epoch trained and validated on the device, its numbers not yet fetched."""

    started: float  # perf_counter at launch
    layout: EpochLayout
    train: TrainSums
    finite: Mapping[str, Tensor]  # per measured slot: seed gradients and parameters finite (bool)
    val: ValidationSums  # per variant of the layout
    seed_params: Mapping[str, int]  # P_seed per measured slot
    host_params: int  # P_host
    diag: Any = None  # the profile's diagnostic tensors (a pytree), fetched with everything else

    def fetch(self) -> EpochNumbers:
        """The epoch's one device→host copy, read back by the layout."""
        train, val = self.train, self.val
        slots = {slot: (*gradient_ratio(train.seed_sq[slot], train.host_sq, n, self.host_params), self.finite[slot])
                 for slot, n in self.seed_params.items()}
        host: tuple[Any, ...] = fetch((train.loss, train.correct, train.count, val.loss, val.correct, slots,
                                       self.diag))
        loss, correct, count, val_loss, val_correct, fetched, diag = host
        per_slot = {slot: SlotFetched(ratio, bool(valid), bool(ok)) for slot, (ratio, valid, ok) in fetched.items()}
        return attrs.evolve(self.read(loss, correct, count, val_loss, val_correct, per_slot), diag=diag)

    def read(self, loss: float, correct: float, count: float, val_loss: list[float], val_correct: list[float],
             slots: Mapping[str, SlotFetched]) -> EpochNumbers:
        """EpochNumbers from the fetched sums: means per sample, per slot its measurement."""
        n = max(count, 1.0)
        acc = [x / self.val.count for x in val_correct]
        measured = tuple(self.layout.slot_measurement(p, acc, slots.get(p.slot_id))
                         for p in self.layout.plan.slots if p.any)
        return EpochNumbers(train_loss=loss / n, train_acc=correct / n, train_count=count,
                            val_loss=val_loss[0] / self.val.count, val_acc=acc[0], slots=measured)
