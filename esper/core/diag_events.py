"""Diagnostic events (`diag.*`, docs/runtime.md §4.4–§4.5): what `--profile` computes beyond the gate inputs.

Values only; the shell measures them (esper.shell.diagnostics) once per epoch e, after e's training
and validation, on e's final weights. Norms are L2; "RMS over batches" of a per-batch norm n_b is
sqrt(Σ_b n_b² / B) over the B training batches of the epoch.
"""

from typing import ClassVar

import attrs

from esper.core.events import Event


@attrs.frozen(kw_only=True)
class DiagGradients(Event):
    kind: ClassVar[str] = "diag.gradients"
    epoch: int
    groups: dict[str, float]  # optimizer group -> RMS over batches of its gradient norm
    layers: dict[str, float] = attrs.field(factory=dict)  # layer -> RMS grad norm; diagnostic profile and above


@attrs.frozen(kw_only=True)
class DiagWeights(Event):
    kind: ClassVar[str] = "diag.weights"
    epoch: int
    layers: dict[str, float]  # layer -> ‖W‖ over all its parameter tensors, at the epoch's end


@attrs.frozen(kw_only=True)
class DiagSharpness(Event):
    kind: ClassVar[str] = "diag.sharpness"
    epoch: int
    sharpness: float  # mean over directions of L(θ + 0.01·‖θ‖·d) − L(θ), loss units
    directions: int
    seconds: float


@attrs.frozen(kw_only=True)
class DiagPerClass(Event):
    kind: ClassVar[str] = "diag.per_class"
    epoch: int
    accuracy: tuple[float, ...]  # the real model's held-out accuracy per class ("nan": class absent)


@attrs.frozen(kw_only=True)
class DiagConfusion(Event):
    kind: ClassVar[str] = "diag.confusion"
    epoch: int
    matrix: tuple[tuple[int, ...], ...]  # [true class][predicted class] counts, held-out split


@attrs.frozen(kw_only=True)
class SlotActivation:
    """One occupied slot on the probe pass (not an event on its own)."""

    slot: str
    host_mean: float  # of h, the host features entering the slot
    host_std: float
    host_rms: float
    delta_rms: float  # of δ(h), the seed's output before the blend
    alpha: float
    ratio: float  # delta_rms / host_rms ("nan" when host_rms is 0)


@attrs.frozen(kw_only=True)
class DiagActivations(Event):
    kind: ClassVar[str] = "diag.activations"
    epoch: int
    slots: tuple[SlotActivation, ...]


@attrs.frozen(kw_only=True)
class DiagIsolation(Event):
    kind: ClassVar[str] = "diag.isolation"
    epoch: int
    batches: int  # training batches of the epoch
    violations: dict[str, int]  # isolated slot -> batches whose gradient reached the host through the seed's input


@attrs.frozen(kw_only=True)
class DiagSkipped(Event):
    kind: ClassVar[str] = "diag.skipped"
    epoch: int
    name: str
    expected_s: float
    budget_s: float
