"""The rule-based controller (docs/runtime.md §1.3–1.4): one decision per epoch, from the same
`FactoredAction` space and masks as PPO. It only issues actions its masks allow.

Seed rules: scan live seeds in slot order (early → late); per seed the first matching row
applies; the first non-WAIT row decides.

M0  any live      input the rows below read is None: contribution    WAIT       input_missing
                  (BLENDING, PROBATIONARY), shadow_gain (TRAINING)
M1  PROBATIONARY  FOSSILIZE unmasked (G5), total_gain >= 0             FOSSILIZE  contributes
M2  PROBATIONARY  contribution > 0 and total_gain < 0                  CULL       dependency_without_gain
M3  BLENDING      epochs_in_stage >= 2 and contribution < -0.02        CULL       blend_hurts
M4  TRAINING      epochs_in_stage >= 3 and shadow_gain < -0.02         CULL       shadow_hurts
M5  otherwise                                                          WAIT       awaiting_gate

(0 is `min_total_gain`.) A CULL row only matches when CULL is unmasked for the slot
(age >= min_cull_age); otherwise the seed falls through to M5.

If no row acts, germination needs C1–C7 in order; the first failing one names the WAIT:
C1 live seeds < concurrent_seeds (`seed_live`); C2 germinations < max_seeds, 0 = unlimited
(`seed_limit`); C3 GERMINATE unmasked for some slot (`no_free_slot`) whose blueprint mask
admits a rotation blueprint (`no_blueprint_fits`); C4 epoch ≥ 5 (`too_early`); C5
E − epoch ≥ min_span(default_tempo) + 2 (`too_late`); C6 tracker latched (`not_stabilised`);
C7 plateau_epochs ≥ 3 (`progressing`). All pass → GERMINATE(`plateau`) with `default_tempo`
into the first free slot in deepest-first order, blueprint by `choose_blueprint`.

`germination = "early"` (ours; the spec has only the plateau) drops C6 and C7 and germinates with
reason `early` as soon as C1–C5 hold. Why: on a short horizon the plateau comes too late for a
seed to pay back. On Fashion-MNIST (30 epochs) the host latches at epoch 11–18, and a seed
germinated then is fossilized with too few epochs left to beat static; one germinated at epoch 2
beats it by about a point (the fashion-mnist preset's measurements, `esper.core.tasks`).

Reason when nothing is done: the first failing C reason, except that when C1 fails (the live
seeds use up the concurrency budget) the live seeds' own WAIT reason is reported instead
(`input_missing` if any seed lacks an input, else the first seed's `awaiting_gate`): it says
what the controller waits for, as the epoch line `late:BLENDING … WAIT(awaiting_gate)` shows.
`germination_blocker` gives the raw C reason. M0's `controller.input_missing` events are
built by `input_missing_events(view)`; the shell emits them (decide returns no events).

Blueprint choice and cull penalty (§1.4): candidates = rotation ∩ blueprints the slot's mask
admits; the minimum of `(penalty[b], (index(b) − pointer) mod N)` wins. `observe` folds the
lifecycle events: `SeedGerminated` → pointer = index(b) + 1, every penalty × 0.85, entries
below 0.1 deleted; `SeedCulled` for any reason but `governor_rollback` → penalty[b] += 1.0.
The rotation is the topology's, led by the run catalogue's user blueprints (`user_blueprints`).
"""

from collections.abc import Iterable
from typing import Any

import attrs

from esper.core.actions import ActionMasks, FactoredAction, Op
from esper.core.catalogue import BLUEPRINT_NAME, catalogue_for
from esper.core.codec import OMIT_IF_DEFAULT
from esper.core.config import Rules, min_span
from esper.core.errors import ConfigError
from esper.core.events import Event, InputMissing, SeedCulled, SeedFossilized, SeedGerminated
from esper.core.seed import LifecycleState, SlotState
from esper.core.signals import TrackerState
from esper.core.stages import LIVE, Stage

CNN_ROTATION = ("conv_light", "conv_heavy", "attention", "norm", "depthwise", "bottleneck")
TRANSFORMER_ROTATION = ("lora", "attention", "mlp", "norm")
# Stack hosts with flat features (esper.shell.nets.stack_host); not a config field, so the
# records of cnn/transformer runs are unchanged.
MLP_ROTATION = ("lora", "mlp", "norm")
NO_PENALTY_CULLS = frozenset({"governor_rollback"})
# The input each live stage's rows read (M0).
_INPUT_FOR = {Stage.TRAINING: "shadow_gain", Stage.BLENDING: "contribution",
              Stage.PROBATIONARY: "contribution"}
GERMINATION_MODES = ("plateau", "early")  # "plateau": C1–C7 as specified; "early": C1–C5 only
WAIT = FactoredAction.wait()
Penalties = tuple[tuple[str, float], ...]


def _names(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def _rotation_errors(topology: str, rotation: tuple[str, ...]) -> list[str]:
    known = tuple(spec.name for spec in catalogue_for(topology).germinable)
    field, listing = f"{topology}_rotation", ", ".join(known)
    errors = [f"{field} names {n!r}, which is not a germinable {topology} blueprint; known: {listing}"
              for n in rotation if n not in known]
    if not rotation:
        errors.append(f"{field} is empty; known {topology} blueprints: {listing}")
    if len(set(rotation)) != len(rotation):
        errors.append(f"{field} repeats a name: {list(rotation)}")
    return errors


def _user_errors(names: tuple[str, ...]) -> list[str]:
    errors = [f"user_blueprints names {n!r}, not a blueprint name ([a-z][a-z0-9_]*)" for n in names
              if not BLUEPRINT_NAME.fullmatch(n) or n == "noop"]
    if len(set(names)) != len(names):
        errors.append(f"user_blueprints repeats a name: {list(names)}")
    return errors


@attrs.frozen(kw_only=True)
class HeuristicConfig:
    """Every threshold of §1.3–1.4. Rotations are validated against the catalogues at
    construction (a bad name raises `ConfigError` listing the known names; the CLI exits 2)."""

    concurrent_seeds: int = 1
    max_seeds: int = 0
    min_germinate_epoch: int = 5
    plateau_epochs: int = 3
    germination: str = "plateau"  # GERMINATION_MODES
    margin: int = 2
    min_total_gain: float = 0.0
    blend_hurts: float = -0.02
    blend_hurts_epochs: int = 2
    shadow_hurts: float = -0.02
    shadow_hurts_epochs: int = 3
    cnn_rotation: tuple[str, ...] = attrs.field(default=CNN_ROTATION, converter=_names)
    transformer_rotation: tuple[str, ...] = attrs.field(default=TRANSFORMER_ROTATION, converter=_names)
    penalty_decay: float = 0.85
    penalty_floor: float = 0.1
    penalty_step: float = 1.0
    # The run catalogue's user blueprints (Catalogue.with_blueprint), in catalogue order: they lead
    # every rotation, so a blueprint the user registered is the first one tried. Absent from the
    # records of runs on the built-in catalogues.
    user_blueprints: tuple[str, ...] = attrs.field(default=(), converter=_names, metadata={OMIT_IF_DEFAULT: True})

    def __attrs_post_init__(self) -> None:
        errors = [*_rotation_errors("cnn", self.cnn_rotation),
                  *_rotation_errors("transformer", self.transformer_rotation),
                  *_user_errors(self.user_blueprints)]
        checks = [
            (self.concurrent_seeds >= 1, f"concurrent_seeds must be >= 1, got {self.concurrent_seeds}"),
            (self.max_seeds >= 0, f"max_seeds must be >= 0 (0 = unlimited), got {self.max_seeds}"),
            (min(self.min_germinate_epoch, self.plateau_epochs, self.margin, self.blend_hurts_epochs,
                 self.shadow_hurts_epochs) >= 0, "epoch counts must be >= 0"),
            (0.0 < self.penalty_decay < 1.0, f"penalty_decay must be in (0, 1), got {self.penalty_decay}"),
            (self.penalty_floor > 0.0, f"penalty_floor must be > 0, got {self.penalty_floor}"),
            (self.penalty_step > 0.0, f"penalty_step must be > 0, got {self.penalty_step}"),
            (self.germination in GERMINATION_MODES,
             f"germination must be one of {', '.join(GERMINATION_MODES)}, got {self.germination!r}"),
        ]
        errors += [message for ok, message in checks if not ok]
        if errors:
            raise ConfigError("heuristic config: " + "; ".join(errors))

    def rotation_for(self, topology: str) -> tuple[str, ...]:
        """The user blueprints, then the topology's rotation (a built-in name the user took is not repeated)."""
        rotations = {"cnn": self.cnn_rotation, "transformer": self.transformer_rotation, "mlp": MLP_ROTATION}
        if topology not in rotations:
            raise ConfigError(f"heuristic config: no rotation for topology {topology!r}")
        users = self.user_blueprints
        return (*users, *(name for name in rotations[topology] if name not in users)) if users else rotations[topology]


def _penalties(values: Iterable[Any]) -> Penalties:
    return tuple(sorted((str(name), float(value)) for name, value in values))


def _pairs(values: Iterable[Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(a), str(b)) for a, b in values))


@attrs.frozen(kw_only=True)
class HeuristicState:
    """Rotation pointer and cull penalties (sorted by name), plus the blueprint of each live
    seed: `SeedCulled` names only the seed, and the penalty is keyed by blueprint."""

    topology: str
    pointer: int = 0
    penalties: Penalties = attrs.field(default=(), converter=_penalties)
    live_seeds: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)

    def penalty(self, blueprint: str) -> float:
        return dict(self.penalties).get(blueprint, 0.0)


# --- the decision view ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SlotView:
    """One enabled slot as the rules read it; seed fields are None / 0 for an empty slot."""

    slot_id: str
    index: int
    stage: Stage = attrs.field(converter=lambda s: Stage[s] if isinstance(s, str) else Stage(s))
    blueprint: str | None = None
    epochs_in_stage: int = 0
    age: int = 0
    alpha: float = 0.0
    contribution: float | None = None
    shadow_gain: float | None = None
    grad_ratio: float | None = None
    total_gain: float | None = None  # val acc now − the seed's acc_at_germination


def _slot_view(slot: SlotState, val_acc: float) -> SlotView:
    seed = slot.seed
    if seed is None:
        return SlotView(slot_id=slot.slot_id, index=slot.index, stage=Stage.DORMANT)
    return SlotView(slot_id=slot.slot_id, index=slot.index, stage=seed.stage, blueprint=seed.blueprint,
                    epochs_in_stage=seed.epochs_in_stage, age=seed.age, alpha=seed.alpha,
                    contribution=seed.contribution, shadow_gain=seed.shadow_gain,
                    grad_ratio=seed.grad_ratio, total_gain=val_acc - seed.acc_at_germination)


@attrs.frozen(kw_only=True)
class DecisionView:
    """Everything `decide` reads: the epoch, the horizon E, the tracker, PPO's masks, the
    enabled slots in host order, and the catalogue/timing facts the rules need."""

    epoch: int
    horizon: int
    topology: str
    tracker: TrackerState
    masks: ActionMasks
    slots: tuple[SlotView, ...] = attrs.field(converter=tuple)
    germinations: int
    blueprint_names: tuple[str, ...] = attrs.field(converter=_names)  # the blueprint head's order
    tempo_index: int  # index of `default_tempo` in `tempo_choices`
    min_span: int  # min_span(cfg, default_tempo)


def decision_view(view: LifecycleState, tracker: TrackerState, masks: ActionMasks, horizon: int,
                  rules: Rules) -> DecisionView:
    """The heuristic's view of a recorded lifecycle view (docs/lifecycle.md §1.3) at horizon E."""
    cfg = rules.config
    return DecisionView(
        epoch=view.epoch, horizon=horizon, topology=view.topology, tracker=tracker, masks=masks,
        slots=tuple(_slot_view(s, view.val_acc) for s in view.slots if s.enabled),
        germinations=view.germinations,
        blueprint_names=tuple(spec.name for spec in rules.catalogue.germinable),
        tempo_index=cfg.tempo_choices.index(cfg.default_tempo),
        min_span=min_span(cfg, cfg.default_tempo),
    )


# --- seed rules M0–M5 --------------------------------------------------------------------------


def _cull_if_allowed(slot: SlotView, masks: ActionMasks, reason: str) -> tuple[FactoredAction, str] | None:
    # A masked CULL (seed younger than min_cull_age) makes the row not match: the seed waits.
    return (FactoredAction.cull(slot.index), reason) if masks.slot[Op.CULL][slot.index] else None


def seed_rule(slot: SlotView, masks: ActionMasks, cfg: HeuristicConfig) -> tuple[FactoredAction, str]:
    """Rows M0–M5 for one live seed: the first matching row's action and reason."""
    needed = _INPUT_FOR.get(slot.stage)
    if needed is not None and getattr(slot, needed) is None:
        return WAIT, "input_missing"
    gain = slot.total_gain if slot.total_gain is not None else 0.0
    row: tuple[FactoredAction, str] | None = None
    if slot.stage == Stage.PROBATIONARY:
        if masks.slot[Op.FOSSILIZE][slot.index] and gain >= cfg.min_total_gain:
            return FactoredAction.fossilize(slot.index), "contributes"
        if slot.contribution is not None and slot.contribution > 0 and gain < cfg.min_total_gain:
            row = _cull_if_allowed(slot, masks, "dependency_without_gain")
    elif slot.stage == Stage.BLENDING:
        if (slot.epochs_in_stage >= cfg.blend_hurts_epochs and slot.contribution is not None
                and slot.contribution < cfg.blend_hurts):
            row = _cull_if_allowed(slot, masks, "blend_hurts")
    elif slot.stage == Stage.TRAINING and (
            slot.epochs_in_stage >= cfg.shadow_hurts_epochs and slot.shadow_gain is not None
            and slot.shadow_gain < cfg.shadow_hurts):
        row = _cull_if_allowed(slot, masks, "shadow_hurts")
    return row or (WAIT, "awaiting_gate")


def input_missing_events(view: DecisionView) -> tuple[InputMissing, ...]:
    """M0's `controller.input_missing` events: one per live seed whose rule input is None."""
    return tuple(
        InputMissing(epoch=view.epoch, slot=s.slot_id, input=_INPUT_FOR[s.stage])
        for s in view.slots if s.stage in _INPUT_FOR and getattr(s, _INPUT_FOR[s.stage]) is None
    )


# --- germination C1–C7 and the blueprint choice ----------------------------------------------


def choose_blueprint(state: HeuristicState, candidates: Iterable[str], cfg: HeuristicConfig) -> str | None:
    """The candidate minimising `(penalty[b], (index(b) − pointer) mod N)`; None if none."""
    rotation = cfg.rotation_for(state.topology)
    n = len(rotation)
    ranked = sorted((state.penalty(b), (rotation.index(b) - state.pointer) % n, b)
                    for b in candidates if b in rotation)
    return ranked[0][2] if ranked else None


def _candidates(slot: SlotView, view: DecisionView, cfg: HeuristicConfig) -> tuple[str, ...]:
    """Rotation blueprints the masks allow germinating into this slot at the default tempo."""
    names = view.blueprint_names
    return tuple(
        b for b in cfg.rotation_for(view.topology)
        if b in names and view.masks.allows(FactoredAction.germinate(slot.index, names.index(b),
                                                                     view.tempo_index))
    )


def _free_slots(view: DecisionView) -> tuple[SlotView, ...]:
    """Slots GERMINATE is unmasked for, deepest first."""
    return tuple(s for s in reversed(view.slots) if view.masks.slot[Op.GERMINATE][s.index])


def germination_blocker(view: DecisionView, cfg: HeuristicConfig) -> str | None:
    """The reason of the first failing condition C1–C7 (C1–C5 when `germination` is "early"),
    or None when germination may go ahead."""
    live = sum(s.stage in LIVE for s in view.slots)
    free = _free_slots(view)
    t = view.tracker
    conditions = [
        (lambda: live < cfg.concurrent_seeds, "seed_live"),
        (lambda: cfg.max_seeds == 0 or view.germinations < cfg.max_seeds, "seed_limit"),
        (lambda: bool(free), "no_free_slot"),
        (lambda: any(_candidates(s, view, cfg) for s in free), "no_blueprint_fits"),
        (lambda: view.epoch >= cfg.min_germinate_epoch, "too_early"),
        (lambda: view.horizon - view.epoch >= view.min_span + cfg.margin, "too_late"),
    ]
    if cfg.germination == "plateau":
        conditions += [(lambda: t.latched, "not_stabilised"),
                       (lambda: t.plateau_epochs >= cfg.plateau_epochs, "progressing")]
    return next((reason for holds, reason in conditions if not holds()), None)


def _germinate(state: HeuristicState, view: DecisionView, cfg: HeuristicConfig) -> FactoredAction | None:
    for slot in _free_slots(view):
        blueprint = choose_blueprint(state, _candidates(slot, view, cfg), cfg)
        if blueprint is not None:
            return FactoredAction.germinate(slot.index, view.blueprint_names.index(blueprint),
                                            view.tempo_index)
    return None


# --- decide and observe ---------------------------------------------------------------------


def decide(state: HeuristicState, view: DecisionView,
           cfg: HeuristicConfig) -> tuple[HeuristicState, FactoredAction, str]:
    """One action per epoch: seed rules M0–M5, else germination C1–C7 (module docstring).

    The state is returned unchanged (it evolves in `observe`, from what actually happened).
    """
    if view.topology != state.topology:
        raise ValueError(f"heuristic state is for {state.topology}, view is {view.topology}")
    waits: list[str] = []
    for slot in view.slots:
        if slot.stage not in LIVE:
            continue
        action, reason = seed_rule(slot, view.masks, cfg)
        if action.op != Op.WAIT:
            return state, action, reason
        waits.append(reason)
    blocker = germination_blocker(view, cfg)
    if blocker is None:
        action = _germinate(state, view, cfg)
        return (state, action, cfg.germination) if action is not None else (state, WAIT, "no_blueprint_fits")
    if blocker == "seed_live" and waits:
        return state, WAIT, "input_missing" if "input_missing" in waits else waits[0]
    return state, WAIT, blocker


def static_decide(state: HeuristicState, view: DecisionView,
                  cfg: HeuristicConfig) -> tuple[HeuristicState, FactoredAction, str]:
    """The `static` controller: always WAIT."""
    return state, WAIT, "static"


def _decayed(penalties: Penalties, cfg: HeuristicConfig) -> Penalties:
    # Decay per germination (not per epoch), so a cull is remembered for a fixed number of
    # choices: 0.85^14 ≈ 0.103 is kept, 0.85^15 ≈ 0.087 is deleted.
    kept = ((b, v * cfg.penalty_decay) for b, v in penalties)
    return tuple((b, v) for b, v in kept if v >= cfg.penalty_floor)


def _fold(state: HeuristicState, event: Event, cfg: HeuristicConfig) -> HeuristicState:
    live = dict(state.live_seeds)
    if isinstance(event, SeedGerminated):
        rotation = cfg.rotation_for(state.topology)
        pointer = rotation.index(event.blueprint) + 1 if event.blueprint in rotation else state.pointer
        live[event.seed_id] = event.blueprint
        return attrs.evolve(state, pointer=pointer, penalties=_decayed(state.penalties, cfg),
                            live_seeds=tuple(live.items()))
    if isinstance(event, SeedCulled | SeedFossilized):
        blueprint = live.pop(event.seed_id, None)
        state = attrs.evolve(state, live_seeds=tuple(live.items()))
        if isinstance(event, SeedCulled) and event.reason not in NO_PENALTY_CULLS:
            if blueprint is None:
                raise ValueError(f"heuristic: cull of {event.seed_id}, whose germination it never observed")
            penalties = dict(state.penalties)
            penalties[blueprint] = penalties.get(blueprint, 0.0) + cfg.penalty_step
            state = attrs.evolve(state, penalties=tuple(penalties.items()))
    return state


def observe(state: HeuristicState, lifecycle_events: Iterable[Event], epoch: int,
            cfg: HeuristicConfig) -> HeuristicState:
    """Fold one boundary's lifecycle events (in order) into the rotation pointer and penalties.

    Pass every lifecycle event of the boundary, a rollback's `governor_rollback` culls included
    (they cost no penalty but end the seed's entry in `live_seeds`). A penalised cull of a seed
    whose germination was never observed raises `ValueError`: its blueprint is unknown.
    `epoch` is accepted for the interface; nothing here depends on it (decay is per germination).
    """
    for event in lifecycle_events:
        state = _fold(state, event, cfg)
    return state
