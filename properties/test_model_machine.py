"""docs/lifecycle.md §11 items 3 and 14 on a real network: a Hypothesis state machine drives a tiny
`MorphogeneticModel` (fashion-mnist CNN host) through random lifecycles of the pure core and
checks after every step that `sync_to` made the module tree mirror the slot states.

Governor rollbacks restore the model from a `model_checkpoint` snapshot, as the trainer does
(§8.6), then apply `lifecycle.rollback` and sync again.
"""

import torch
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from profiles import scaled

from esper.core import lifecycle
from esper.core.blend import knobs_for
from esper.core.seed import LifecycleState
from esper.core.stages import HAS_MODULE, Stage
from esper.shell.checkpoint import load_model_checkpoint, model_checkpoint
from esper.shell.model import MorphogeneticModel, StructureChange, seed_generator
from esper.shell.nets.blueprints import build_blueprint
from esper.shell.nets.hosts import host_for
from esper.testing import strategies as es

BATCH = 2


class ModelMachine(RuleBasedStateMachine):
    @initialize(config=es.lifecycle_configs(), data=st.data())
    def start(self, config, data):
        host = host_for("fashion-mnist", torch.Generator().manual_seed(0))
        self.model = MorphogeneticModel(host, run_seed=data.draw(st.integers(0, 2**32)), lifecycle=config)
        self.rules = self.model.rules(config)
        names = list(self.model.slot_ids)
        enabled = data.draw(st.sets(st.sampled_from(names), min_size=1))
        self.state = lifecycle.initial_state("cnn", host.slot_specs, enabled)
        self.snapshot: tuple[dict, LifecycleState] | None = None
        self.x = torch.randn(BATCH, *host.config.input_shape, generator=torch.Generator().manual_seed(1))
        assert self.model.sync_to(self.state).empty

    # -- rules ------------------------------------------------------------------------------
    # One rule, so every step is a boundary and seeds live long enough to fossilize; snapshots,
    # rollbacks and forwards ride along at fixed odds (as in test_lifecycle_machine).

    @rule(data=st.data(), extra=st.sampled_from(["none"] * 14 + ["snapshot", "rollback", "forward"] * 2))
    def boundary(self, data, extra):
        if extra == "snapshot":
            self.snapshot = (model_checkpoint(self.model, self.state), self.state)
        if extra == "rollback" and self.snapshot is not None:
            self._governor_rollback(data)
            return
        view = lifecycle.record(self.state, data.draw(es.epoch_measurements(self.state)))
        self._act(view, data)
        if extra == "forward":
            self._forward(data.draw(st.booleans()))

    def _governor_rollback(self, data) -> None:
        saved, snapshot_state = self.snapshot
        restored = load_model_checkpoint(saved, lifecycle=self.rules.config)
        assert restored.state == snapshot_state
        self._check_mirror(restored.model, snapshot_state)
        self.model = restored.model
        m = data.draw(es.epoch_measurements(self.state))
        view, _ = lifecycle.rollback(snapshot_state, self.state, m, self.rules)
        self._act(view, data, before=snapshot_state)

    def _forward(self, train: bool) -> None:
        self.model.train(train)
        with torch.no_grad():
            out = self.model(self.x)
        assert out.shape == (BATCH, 10)

    def _act(self, view: LifecycleState, data, before: LifecycleState | None = None) -> None:
        before = before or self.state
        action = data.draw(es.legal_actions(view, self.rules))
        self.state, _ = lifecycle.apply_action(view, action, self.rules)
        change = self.model.sync_to(self.state)
        self._check_change(before, change)

    def _check_change(self, before: LifecycleState, change: StructureChange) -> None:
        """The reported change is exactly the difference between the two mirrored states."""
        added, removed, fossilized, restaged = [], [], [], []
        for old, new in zip(before.slots, self.state.slots, strict=True):
            had, has = old.stage in HAS_MODULE, new.stage in HAS_MODULE
            if has and not had:
                added.append(new.slot_id)
                self._check_fresh_seed(new)
            elif had and not has:
                removed.append(new.slot_id)
            elif has and old.stage != new.stage:
                (fossilized if new.stage == Stage.FOSSILIZED else restaged).append(new.slot_id)
        assert change == StructureChange(tuple(added), tuple(removed), tuple(fossilized), tuple(restaged))

    def _check_fresh_seed(self, slot_state) -> None:
        """A new module holds exactly the §8.1 seed-init rule's weights."""
        m = self.model
        generator = seed_generator(m.run_seed, m.episode, m.env_index, slot_state.index,
                                   slot_state.germinations)
        expected = build_blueprint("cnn", slot_state.seed.blueprint, slot_state.dim, generator)
        built = m.slot(slot_state.slot_id).module
        for a, b in zip(built.parameters(), expected.parameters(), strict=True):
            assert torch.equal(a, b)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def mirrors_the_state(self):
        self._check_mirror(self.model, self.state)

    @invariant()
    def sync_is_idempotent(self):
        assert self.model.sync_to(self.state).empty

    def _check_mirror(self, model: MorphogeneticModel, state: LifecycleState) -> None:
        grad_from = self.rules.config.input_grad_from
        for slot, target in zip(model.seed_slots(), state.slots, strict=True):
            seed = target.seed
            has_module = target.stage in HAS_MODULE
            assert (slot.module is not None) == has_module
            if has_module:
                assert (slot.blueprint, slot.seed_id) == (seed.blueprint, seed.seed_id)
                assert slot.knobs == knobs_for(target.stage, grad_from)
                assert slot.n_params() == seed.n_params
            else:
                assert slot.knobs is None and slot.blueprint is None
            alpha = seed.alpha if has_module else 0.0
            assert torch.equal(slot.alpha, torch.tensor(alpha, dtype=slot.alpha.dtype))
        assert model.param_counts() == lifecycle.param_counts(state, model.host_params)
        assert model.param_counts().host == sum(p.numel() for p in model.host.parameters())


ModelMachine.TestCase.settings = scaled(0.75, steps=0.8)
TestModelMachine = ModelMachine.TestCase
