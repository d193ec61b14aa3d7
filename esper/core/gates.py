"""Quality gates G0, G1, G2, G3, G5 (docs/lifecycle.md §3) and the gradient-activity ratio (§3.2).

A gate evaluates *all* its checks in table order and reports each; its `reason` is the code
of the first failing check. A check whose input was not measured (None) fails with
`missing:<input>` and never passes. G4 is retired and never emitted.
"""

from collections.abc import Sequence
from enum import IntEnum

import attrs
import torch
from torch import Tensor

from esper.core.catalogue import Catalogue, ValidationTable
from esper.core.config import LifecycleConfig
from esper.core.errors import LifecycleError
from esper.core.seed import SeedState, SlotState
from esper.core.stages import Stage


class GateLevel(IntEnum):
    G0 = 0
    G1 = 1
    G2 = 2
    G3 = 3
    G5 = 5

    def __str__(self) -> str:
        return self.name


@attrs.frozen
class Check:
    name: str
    value: object
    threshold: object
    passed: bool
    code: str  # failure code, reported as the gate's reason when this is the first failure


@attrs.frozen
class GateResult:
    gate: GateLevel | None  # None for the non-gate legality checks of WAIT and CULL
    slot_id: str | None
    seed_id: str | None
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reason(self) -> str | None:
        return next((c.code for c in self.checks if not c.passed), None)


def _result(gate: GateLevel | None, slot: SlotState | None, checks: Sequence[Check]) -> GateResult:
    seed_id = slot.seed.seed_id if slot is not None and slot.seed is not None else None
    return GateResult(gate, slot.slot_id if slot is not None else None, seed_id, tuple(checks))


def check(name: str, value: object, threshold: object, passed: bool, code: str) -> Check:
    return Check(name, value, threshold, bool(passed), code)


def at_least(name: str, value: float | None, threshold: float, code: str) -> Check:
    """`value ≥ threshold`; a missing value fails with `missing:<name>`."""
    if value is None:
        return Check(name, None, threshold, False, f"missing:{name}")
    return Check(name, value, threshold, value >= threshold, code)


def blueprint_fits(
    slot: SlotState, catalogue: Catalogue, validation: ValidationTable, cfg: LifecycleConfig,
    k: int,
) -> bool:
    """Germinable entry k may go into this slot: constraint, parameter cap, validation entry."""
    spec = catalogue.germinable[k]
    within_cap = cfg.max_seed_params == 0 or spec.params(slot.dim) <= cfg.max_seed_params
    has_entry = validation.status(slot.index, spec.index) is not None
    return spec.fits(slot.dim) and within_cap and has_entry


def g0(
    slot: SlotState, blueprint: int, tempo: int, germinations: int,
    cfg: LifecycleConfig, catalogue: Catalogue, validation: ValidationTable,
) -> GateResult:
    """G0 — may this slot germinate blueprint head index `blueprint` with tempo index `tempo`?"""
    n_germinable = len(catalogue.germinable)
    germinable = 0 <= blueprint < n_germinable
    budget_left = cfg.max_seeds == 0 or germinations < cfg.max_seeds
    fits = germinable and blueprint_fits(slot, catalogue, validation, cfg, blueprint)
    return _result(GateLevel.G0, slot, [
        check("slot_enabled", slot.enabled, True, slot.enabled, "slot_disabled"),
        check("stage", slot.stage, Stage.DORMANT, slot.stage == Stage.DORMANT, "slot_occupied"),
        check("seed_budget", germinations, cfg.max_seeds, budget_left, "seed_budget_spent"),
        check("blueprint", blueprint, n_germinable, germinable, "not_germinable"),
        check("blueprint_fit", blueprint, slot.dim, fits, "blueprint_unfit"),
        check("tempo", tempo, len(cfg.tempo_choices), 0 <= tempo < len(cfg.tempo_choices),
              "tempo_unknown"),
    ])


def g1(slot: SlotState, validation: ValidationTable) -> GateResult:
    """G1 — the just-germinated seed's blueprint passed its probe in this slot."""
    seed = _seed(slot)
    entry = validation.status(slot.index, seed.blueprint_index)
    probe = (
        Check("validation", None, True, False, "missing:validation") if entry is None
        else check("validation", entry, True, entry, "probe_failed")
    )
    return _result(GateLevel.G1, slot, [
        check("stage", seed.stage, Stage.GERMINATED, seed.stage == Stage.GERMINATED, "wrong_stage"),
        probe,
    ])


def g2(slot: SlotState, cfg: LifecycleConfig) -> GateResult:
    """G2 — TRAINING → BLENDING: old enough, gradients flowing, and blending it in would help."""
    seed = _seed(slot)
    return _result(GateLevel.G2, slot, [
        check("epochs_in_stage", seed.epochs_in_stage, cfg.min_training_epochs,
              seed.epochs_in_stage >= cfg.min_training_epochs, "too_young"),
        at_least("grad_ratio", seed.grad_ratio, cfg.min_grad_ratio, "grad_ratio_low"),
        at_least("shadow_gain", seed.shadow_gain, cfg.min_training_improvement, "shadow_gain_low"),
    ])


def g3(slot: SlotState, cfg: LifecycleConfig) -> GateResult:
    """G3 — BLENDING → PROBATIONARY: the ramp is complete."""
    seed = _seed(slot)
    return _result(GateLevel.G3, slot, [
        check("ramp_step", seed.ramp_step, seed.tempo, seed.ramp_step == seed.tempo,
              "ramp_incomplete"),
        check("alpha", seed.alpha, cfg.alpha_complete, seed.alpha >= cfg.alpha_complete, "alpha_low"),
        check("epochs_in_stage", seed.epochs_in_stage, cfg.min_blending_epochs,
              seed.epochs_in_stage >= cfg.min_blending_epochs, "too_young"),
    ])


def g5(slot: SlotState, cfg: LifecycleConfig) -> GateResult:
    """G5 — PROBATIONARY → FOSSILIZED: watched long enough, contributes enough, finite."""
    seed = slot.seed
    stage = slot.stage
    eis = seed.epochs_in_stage if seed is not None else 0
    return _result(GateLevel.G5, slot, [
        check("stage", stage, Stage.PROBATIONARY, stage == Stage.PROBATIONARY, "wrong_stage"),
        check("epochs_in_stage", eis, cfg.min_probation_epochs,
              seed is not None and eis >= cfg.min_probation_epochs, "too_young"),
        at_least("contribution", seed.contribution if seed else None,
                 cfg.min_fossilize_contribution, "contribution_low"),
        check("seed_finite", seed.seed_finite if seed else None, True,
              seed is not None and seed.seed_finite, "nonfinite"),
    ])


def _seed(slot: SlotState) -> SeedState:
    if slot.seed is None:
        raise LifecycleError(f"gate evaluated on empty slot {slot.slot_id}")
    return slot.seed


def gradient_ratio(
    seed_sq: Tensor, host_sq: Tensor, seed_params: Tensor | int, host_params: Tensor | int,
    cap: float = 10.0, eps: float = 1e-16,
) -> tuple[Tensor, Tensor]:
    r"""Per-parameter gradient-activity ratio of a seed against the host (docs/lifecycle.md §3.2).

        ratio = min( sqrt(S_seed / P_seed) / sqrt(S_host / P_host), cap )

    with S = Σ over the epoch's steps of ‖g‖² (accumulated on the device) and P = parameter
    counts. Returns `(ratio, valid)`; `valid` is False where the host gradient vanished
    (S_host / P_host < eps) or the seed has no parameters, and the lifecycle then gets None.
    """
    seed_params = torch.as_tensor(seed_params, dtype=seed_sq.dtype)
    host_params = torch.as_tensor(host_params, dtype=host_sq.dtype)
    host_mean = host_sq / host_params
    valid = (host_mean >= eps) & (seed_params > 0)
    seed_rms = torch.sqrt(seed_sq / seed_params.clamp_min(1))
    ratio = seed_rms / torch.sqrt(host_mean.clamp_min(eps))
    return torch.clamp(ratio, max=cap), valid
