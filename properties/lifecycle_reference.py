"""A small, independent reference model of the seed lifecycle, for the state-machine test.

Written from the rule tables of docs/lifecycle.md §1.2–§1.5, §3 and §9 in the plainest possible
style (mutable records, string stages, no shared helpers with esper.core's lifecycle), so
that a bug in the real step function shows up as a disagreement instead of being copied.
"""

import copy
import math
from dataclasses import dataclass, field

from esper.core.actions import FactoredAction
from esper.core.config import Rules

CULLABLE = ("TRAINING", "BLENDING", "PROBATIONARY")


def ref_curve(curve: str, u: float, steepness: float = 12.0) -> float:
    """a(u) as the spec's §4 table writes it (LINEAR u; COSINE (1 − cos πu)/2; SIGMOID the
    normalised logistic), pinned to 0 for u ≤ 0 and 1 for u ≥ 1. Written from the equations,
    not from esper.core.alpha (which evaluates other, algebraically equal forms)."""
    if u <= 0.0:
        return 0.0
    if u >= 1.0:
        return 1.0
    if curve == "LINEAR":
        return u
    if curve == "COSINE":
        return (1.0 - math.cos(math.pi * u)) / 2.0

    def sigma(z: float) -> float:
        return 1.0 / (1.0 + math.exp(-z))

    s = steepness
    return (sigma(s * (u - 0.5)) - sigma(-s / 2)) / (sigma(s / 2) - sigma(-s / 2))


@dataclass
class RefSeed:
    blueprint_index: int
    tempo: int
    stage: str = "TRAINING"
    eis: int = 0
    age: int = 0
    ramp: int = 0
    contribution: float | None = None
    shadow: float | None = None
    grad: float | None = None
    finite: bool = True
    cull_reason: str | None = None


@dataclass
class RefSlot:
    slot_id: str
    dim: int
    enabled: bool
    seed: RefSeed | None = None
    germinations: int = 0
    culls: int = 0
    touched: bool = False

    @property
    def stage(self) -> str:
        return self.seed.stage if self.seed else "DORMANT"


@dataclass
class RefModel:
    rules: Rules
    slots: list[RefSlot]
    serial: int = 0
    epoch: int = 0
    retired: list[str] = field(default_factory=list)

    @classmethod
    def from_state(cls, rules: Rules, state) -> "RefModel":
        return cls(rules, [RefSlot(s.slot_id, s.dim, s.enabled) for s in state.slots])

    # -- record ----------------------------------------------------------------
    def record(self, m) -> None:
        self.epoch = m.epoch
        reported = {sm.slot_id: sm for sm in m.slots}
        for slot in self.slots:
            slot.touched = False
            if slot.seed is None:
                continue
            sm = reported.get(slot.slot_id)
            slot.seed.age += 1
            slot.seed.eis += 1
            slot.seed.contribution = sm.contribution if sm else None
            slot.seed.shadow = sm.shadow_gain if sm else None
            slot.seed.grad = sm.grad_ratio if sm else None
            slot.seed.finite = sm.seed_finite if sm else True

    def rollback_to(self, snapshot: "RefModel", m) -> None:
        counters = [(s.germinations, s.culls) for s in self.slots]
        restored = copy.deepcopy(snapshot.slots)
        for slot, (g, c) in zip(restored, counters, strict=True):
            slot.germinations, slot.culls = g, c
        self.slots = restored
        self.record(type(m)(epoch=m.epoch, val_acc=m.val_acc))
        for slot in self.slots:
            if slot.stage in CULLABLE:
                self._enter(slot, "CULLED", "governor_rollback")

    # -- controller action ----------------------------------------------------
    def fits(self, slot: RefSlot, k: int) -> bool:
        spec = self.rules.catalogue.germinable[k]
        cap = self.rules.config.max_seed_params
        entry = self.rules.validation.entries[self.slots.index(slot)][spec.index]
        return spec.constraint(slot.dim) and (cap == 0 or spec.params(slot.dim) <= cap) and entry is not None

    def accepts(self, a: FactoredAction) -> bool:
        return self.refusal(a) is None

    def refusal(self, a: FactoredAction) -> str | None:
        """Why `act` must refuse this action (the first failing check's code, in the order of the
        spec's G0 / CULL / G5 rows), or None when it must accept it."""
        cfg = self.rules.config
        name = a.op.name
        if name == "WAIT":
            return None
        if not 0 <= a.slot < len(self.slots):
            return "slot_unknown"
        slot = self.slots[a.slot]
        if name == "GERMINATE":
            n_bp = len(self.rules.catalogue.germinable)
            failures = [
                (not slot.enabled, "slot_disabled"),
                (slot.seed is not None, "slot_occupied"),
                (cfg.max_seeds != 0 and sum(s.germinations for s in self.slots) >= cfg.max_seeds,
                 "seed_budget_spent"),
                (not 0 <= a.blueprint < n_bp, "not_germinable"),
                (not (0 <= a.blueprint < n_bp and self.fits(slot, a.blueprint)), "blueprint_unfit"),
                (not 0 <= a.tempo < len(cfg.tempo_choices), "tempo_unknown"),
            ]
        elif name == "CULL":
            failures = [(not slot.enabled, "slot_disabled"), (slot.stage not in CULLABLE, "wrong_stage"),
                        (slot.seed is None or slot.seed.age < cfg.min_cull_age, "too_young")]
        else:  # FOSSILIZE: G5 has no enabled check (a disabled slot never holds a seed)
            seed = slot.seed
            contribution = seed.contribution if seed else None
            failures = [
                (slot.stage != "PROBATIONARY", "wrong_stage"),
                (seed is None or seed.eis < cfg.min_probation_epochs, "too_young"),
                (contribution is None, "missing:contribution"),
                (contribution is not None and contribution < cfg.min_fossilize_contribution,
                 "contribution_low"),
                (seed is None or not seed.finite, "nonfinite"),
            ]
        return next((code for failed, code in failures if failed), None)

    def act(self, a: FactoredAction) -> None:
        if not self.accepts(a) or a.op.name == "WAIT":
            return
        slot = self.slots[a.slot]
        if a.op.name == "GERMINATE":
            spec = self.rules.catalogue.germinable[a.blueprint]
            slot.seed = RefSeed(spec.index, self.rules.config.tempo_choices[a.tempo])
            slot.germinations += 1
            self.serial += 1
            probed = self.rules.validation.entries[a.slot][spec.index]
            if probed is True:
                self._enter(slot, "TRAINING")
            else:
                self._enter(slot, "CULLED", "g1:missing:validation" if probed is None else "g1:probe_failed")
        elif a.op.name == "CULL":
            self._enter(slot, "CULLED", "action")
        else:
            self._enter(slot, "FOSSILIZED")

    # -- mechanical rules -----------------------------------------------------
    def advance(self) -> None:
        cfg = self.rules.config
        for slot in self.slots:
            seed = slot.seed
            if seed is None or slot.touched:
                continue
            if seed.stage in CULLABLE and not seed.finite:
                self._enter(slot, "CULLED", "nonfinite")
            elif seed.stage == "TRAINING":
                g2 = (seed.eis >= cfg.min_training_epochs
                      and seed.grad is not None and seed.grad >= cfg.min_grad_ratio
                      and seed.shadow is not None and seed.shadow >= cfg.min_training_improvement)
                if g2:
                    self._enter(slot, "BLENDING")
                elif seed.eis >= cfg.max_training_epochs:
                    self._enter(slot, "CULLED", "training_timeout")
            elif seed.stage == "BLENDING":
                if seed.ramp == seed.tempo and seed.eis >= cfg.min_blending_epochs:
                    self._enter(slot, "PROBATIONARY")
                else:
                    seed.ramp = min(seed.ramp + 1, seed.tempo)
            elif seed.stage == "PROBATIONARY":
                if seed.contribution is not None and seed.contribution <= 0:
                    self._enter(slot, "CULLED", "negative_contribution")
                elif seed.eis >= cfg.max_probation_epochs:
                    self._enter(slot, "CULLED", "probation_timeout")
            elif seed.stage == "CULLED" and seed.eis >= cfg.cull_dwell:
                self._enter(slot, "EMBARGOED")
            elif seed.stage == "EMBARGOED" and seed.eis >= cfg.embargo_dwell:
                self._enter(slot, "RESETTING")
            elif seed.stage == "RESETTING" and seed.eis >= cfg.reset_dwell:
                slot.seed = None

    def _enter(self, slot: RefSlot, stage: str, reason: str | None = None) -> None:
        slot.touched = True
        if reason is not None:
            slot.seed.cull_reason = reason
        slot.seed.stage = stage
        slot.seed.eis = 0
        slot.seed.ramp = {"BLENDING": 1, "PROBATIONARY": slot.seed.tempo,
                          "FOSSILIZED": slot.seed.tempo}.get(stage, 0)
        if stage == "CULLED":
            slot.culls += 1

    # -- what the real state must look like ----------------------------------
    def expected_alpha(self, slot: RefSlot) -> float:
        seed = slot.seed
        if seed is None or seed.stage not in ("BLENDING", "PROBATIONARY", "FOSSILIZED"):
            return 0.0
        cfg = self.rules.config
        return ref_curve(cfg.blend_curve.name, seed.ramp / seed.tempo, cfg.sigmoid_steepness)
