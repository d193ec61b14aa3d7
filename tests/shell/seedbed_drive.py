"""Test helper: drive the pure lifecycle with crafted measurements to put seeds in chosen stages.

"Healthy" measurements pass every gate (G2, G3, G5); a "stalled" slot reports no gradient
ratio, so G2 never passes and its seed stays in TRAINING until the timeout.
"""

from collections.abc import Callable, Collection, Sequence

import torch
from torch import Tensor, nn

from esper.core import lifecycle
from esper.core.actions import FactoredAction, Op
from esper.core.config import LifecycleConfig, Rules
from esper.core.legality import can_apply
from esper.core.measurements import EpochMeasurements, SlotMeasurement
from esper.core.seed import LifecycleState
from esper.core.stages import COOLING, Stage
from esper.shell.model import MorphogeneticModel
from esper.shell.nets.hosts import host_config, host_for

# Long timeouts, so seeds held in TRAINING or PROBATIONARY by a script are never culled by one.
PATIENT = LifecycleConfig(max_training_epochs=30, max_probation_epochs=30)
MIXED_SLOTS = (("fossil", 0), ("probation", 1), ("cooling", 2), ("blending", 3), ("training", 4))
MIXED_BLUEPRINTS = {
    "cnn": ("conv_light", "attention", "norm", "depthwise", "bottleneck"),
    "transformer": ("mlp", "attention", "norm", "lora", "norm"),
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_model(preset: str, *, run_seed: int = 0, config: LifecycleConfig = PATIENT,
               **host_overrides: object) -> MorphogeneticModel:
    return MorphogeneticModel(host_for(preset, gen(0), **host_overrides), run_seed=run_seed, lifecycle=config)


def sample_batch(model: MorphogeneticModel, batch: int = 4, seed: int = 7) -> tuple[Tensor, Tensor]:
    """Inputs and targets: images and class labels, or tokens and next tokens."""
    cfg = model.host.config
    if model.topology == "cnn":
        return (torch.randn(batch, *cfg.input_shape, generator=gen(seed)),
                torch.randint(0, cfg.n_classes, (batch,), generator=gen(seed + 1)))
    tokens = torch.randint(0, cfg.vocab_size, (batch, 17), generator=gen(seed))
    return tokens[:, :-1], tokens[:, 1:]


def loss_of(out: Tensor, target: Tensor) -> Tensor:
    return nn.functional.cross_entropy(out.flatten(0, -2), target.flatten())


def initial(model: MorphogeneticModel) -> LifecycleState:
    return lifecycle.initial_state(model.topology, model.host.slot_specs)


def boundary(state: LifecycleState, rules: Rules, action: FactoredAction | None = None,
             stall: Collection[str] = ()) -> LifecycleState:
    """One boundary: record crafted measurements for every occupied slot, then act and advance."""
    def measure(slot_id: str) -> SlotMeasurement:
        if slot_id in stall:
            return SlotMeasurement(slot_id=slot_id, contribution=0.05, shadow_gain=0.05)
        return SlotMeasurement(slot_id=slot_id, contribution=0.05, shadow_gain=0.05, grad_ratio=1.0)

    m = EpochMeasurements(epoch=state.epoch + 1, val_acc=0.5,
                          slots=tuple(measure(s.slot_id) for s in state.slots if s.seed is not None))
    new_state, _ = lifecycle.apply_action(lifecycle.record(state, m), action or FactoredAction.wait(), rules)
    return new_state


def germinate_action(state: LifecycleState, rules: Rules, slot_id: str, blueprint: str,
                     tempo: int = 3) -> FactoredAction:
    return FactoredAction.germinate(state.slot(slot_id).index, rules.catalogue.germinable_index(blueprint),
                                    rules.config.tempo_choices.index(tempo))


def drive_to(state: LifecycleState, rules: Rules, slot_id: str, stage: Stage,
             on_boundary: Callable[[LifecycleState], None] | None = None) -> LifecycleState:
    """Boundaries until `slot_id` reaches `stage`; FOSSILIZE / CULL as soon as legal when asked for."""
    index = state.slot(slot_id).index
    for _ in range(40):
        if state.slot(slot_id).stage == stage:
            return state
        action = None
        if stage == Stage.FOSSILIZED or stage in COOLING:
            want = FactoredAction(Op.FOSSILIZE if stage == Stage.FOSSILIZED else Op.CULL, index)
            probe = lifecycle.record(state, EpochMeasurements(
                epoch=state.epoch + 1, val_acc=0.5,
                slots=(SlotMeasurement(slot_id=slot_id, contribution=0.05, shadow_gain=0.05,
                                       grad_ratio=1.0),)))
            action = want if can_apply(probe, want, rules).passed else None
        state = boundary(state, rules, action)
        if on_boundary is not None:
            on_boundary(state)
    raise AssertionError(f"slot {slot_id} never reached {stage}: {state.slot(slot_id).stage}")


def seeded(model: MorphogeneticModel, slot_id: str, blueprint: str, stage: Stage = Stage.TRAINING,
           tempo: int = 3) -> LifecycleState:
    """A state in which `slot_id` holds a `blueprint` seed in `stage` (all other slots empty)."""
    rules = model.rules()
    state = initial(model)
    state = boundary(state, rules, germinate_action(state, rules, slot_id, blueprint, tempo))
    return drive_to(state, rules, slot_id, stage)


def mixed_model(preset: str, run_seed: int = 3) -> MorphogeneticModel:
    """A 5-slot host (`cifar10-deep` or `tiny` with 5 layers) for the mixed-stage state."""
    if preset == "tiny":
        return make_model(preset, run_seed=run_seed, n_layers=5, slots=MIXED_SLOTS)
    host_config(preset, slots=MIXED_SLOTS)  # validates the layout before building
    return make_model(preset, run_seed=run_seed, slots=MIXED_SLOTS)


def mixed_script(state: LifecycleState, rules: Rules, topology: str) -> Sequence[FactoredAction]:
    """Eight boundaries ending with every slot of MIXED_SLOTS in the stage it is named after."""
    bp = dict(zip([name for name, _ in MIXED_SLOTS], MIXED_BLUEPRINTS[topology], strict=True))
    g = lambda slot, tempo=3: germinate_action(state, rules, slot, bp[slot], tempo)  # noqa: E731
    wait = FactoredAction.wait()
    return (g("fossil"), g("probation"), g("cooling"), g("blending", 8), g("training"),
            FactoredAction.cull(2), wait, FactoredAction.fossilize(0))


def run_mixed(model: MorphogeneticModel,
              on_boundary: Callable[[LifecycleState], None] | None = None) -> LifecycleState:
    """Drive the mixed script, calling `on_boundary(state)` after each boundary (sync, train, …)."""
    rules = model.rules()
    state = initial(model)
    for action in mixed_script(state, rules, model.topology):
        state = boundary(state, rules, action, stall={"training"})
        if on_boundary is not None:
            on_boundary(state)
    stages = {s.slot_id: s.stage for s in state.slots}
    assert stages == {"fossil": Stage.FOSSILIZED, "probation": Stage.PROBATIONARY,
                      "cooling": Stage.EMBARGOED, "blending": Stage.BLENDING,
                      "training": Stage.TRAINING}, stages
    assert 0.0 < state.slot("blending").seed.alpha < 1.0
    return state


def train_step(model: MorphogeneticModel, optimizer: torch.optim.Optimizer, x: Tensor,
               target: Tensor) -> None:
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss_of(model(x), target).backward()
    optimizer.step()
