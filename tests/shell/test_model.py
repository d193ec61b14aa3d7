"""MorphogeneticModel (docs/lifecycle.md §6.4, §8; §11 items 3, 8–11, 13, 14): validation, sync_to,
exact identity and isolation per blueprint × slot, counterfactual purity, optimizer groups."""

import copy

import attrs
import numpy as np
import pytest
import torch
from seedbed_drive import (
    boundary,
    drive_to,
    germinate_action,
    initial,
    loss_of,
    make_model,
    mixed_model,
    run_mixed,
    sample_batch,
    seeded,
    train_step,
)
from torch import nn

from esper.core import lifecycle
from esper.core.catalogue import BlueprintSpec, Catalogue, catalogue_for
from esper.core.config import LifecycleConfig
from esper.core.errors import ConfigError, HostCatalogueMismatch, HostConfigError
from esper.core.stages import Stage
from esper.shell import model as model_mod
from esper.shell.model import (
    MorphogeneticModel,
    OverrideError,
    SyncError,
    seed_generator,
)
from esper.shell.nets.blueprints import build_blueprint
from esper.shell.nets.dropout import dropout_generators
from esper.shell.optim_groups import param_groups, sync_optimizer

PRESETS = ("cifar10", "fashion-mnist", "tiny")
# Every host preset for the per-slot identity and isolation checks; tinystories at its 8,192-token
# BPE vocabulary (the slots do not depend on the vocabulary, and it halves the build).
ALL_HOSTS = {"cifar10": "cnn", "cifar10-deep": "cnn", "fashion-mnist": "cnn", "tiny": "transformer",
             "synth-stories": "transformer", "tinystories": "transformer"}
HOST_OVERRIDES = {"tinystories": {"vocab_size": 8192}}
SLOTS = ("early", "mid", "late")
CASES = [pytest.param(p, s, b.name, id=f"{p}-{s}-{b.name}",
                      marks=[pytest.mark.slow] if p == "tinystories" else [])  # 14M params: make test-slow
         for p, topology in ALL_HOSTS.items() for s in SLOTS
         for b in catalogue_for(topology).germinable]


def host_grads(model: MorphogeneticModel) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.host.named_parameters() if p.grad is not None}


def backward(model: MorphogeneticModel, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    for generator in dropout_generators(model):  # the same masks for every model compared (tinystories: p = 0.1)
        generator.manual_seed(1234)
    model.zero_grad(set_to_none=True)
    out = model(x)
    loss_of(out, target).backward()
    return out


def perturb(module: nn.Module, seed: int = 11) -> None:
    """Noise in every parameter, so a zero-initialised last layer no longer hides δ."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))


def upstream_downstream(model: MorphogeneticModel) -> tuple[str, str]:
    """A host parameter only upstream of every slot, and one only downstream of every slot."""
    if model.topology == "cnn":
        return "blocks.0.conv.weight", "head.fc.weight"
    return "wpe.weight", "ln_f.weight"


# --- §6.4 validation -------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_every_blueprint_is_validated_for_every_slot(preset):
    model = make_model(preset)
    assert all(all(entry is True for entry in row) for row in model.validation.entries)
    rules = model.rules()
    assert rules.validation == model.validation and rules.catalogue == model.catalogue


def test_probe_failure_names_slot_and_blueprint(monkeypatch):
    def broken(topology, name, dim, generator):
        module = build_blueprint(topology, name, dim, generator)
        if name == "depthwise":
            perturb(module)  # δ ≠ 0 at birth
        return module

    monkeypatch.setattr(model_mod, "build_blueprint", broken)
    model_mod._probed_rows.cache_clear()  # probe results are cached per process
    with pytest.raises(HostCatalogueMismatch, match=r"slot early .*'depthwise'.*not zero"):
        make_model("fashion-mnist")


def test_wrong_formula_raises_naming_slot_and_blueprint():
    real = catalogue_for("cnn")
    entries = tuple(attrs.evolve(e, params=lambda c: 1) if e.name == "norm" else e for e in real.entries)
    host = make_model("fashion-mnist").host
    with pytest.raises(HostCatalogueMismatch, match=r"slot early.*'norm'.*formula 1"):
        MorphogeneticModel(host, run_seed=0, catalogue=Catalogue("cnn", entries))


def test_unfit_pairs_are_none_and_a_slot_without_blueprints_raises():
    wide_only = lambda c: c >= 16  # noqa: E731 - excludes the early slot (C = 8)
    entries = tuple(BlueprintSpec(e.index, e.name, e.params, wide_only if e.name != "noop" else e.constraint)
                    for e in catalogue_for("cnn").entries)
    catalogue = Catalogue("cnn", entries)
    host = make_model("fashion-mnist").host
    with pytest.raises(HostConfigError, match="slot early"):
        MorphogeneticModel(host, run_seed=0, catalogue=catalogue)
    model = MorphogeneticModel(host, run_seed=0, catalogue=catalogue, enabled={"mid", "late"})
    assert model.validation.entries[0][1:] == (None,) * 6
    assert all(model.validation.entries[1])


# --- identity, isolation, counts per blueprint × slot (I1, I2, I4, §11 items 8, 9, 10, 11) ----


@pytest.mark.parametrize(("preset", "slot_id", "blueprint"), CASES)
def test_seed_in_every_slot(preset, slot_id, blueprint):
    torch.manual_seed(0)
    model = make_model(preset, **HOST_OVERRIDES.get(preset, {}))
    x, target = sample_batch(model)
    bare = copy.deepcopy(model)
    model.eval()
    expected = model(x)

    state = seeded(model, slot_id, blueprint)
    assert model.sync_to(state).added == (slot_id,)
    slot = model.slot(slot_id)
    seed_state = state.slot(slot_id).seed
    formula = model.catalogue.spec(blueprint).params(slot.dim)
    assert slot.n_params() == formula == seed_state.n_params
    assert model.param_counts() == lifecycle.param_counts(state, model.host_params)

    # Shape kept: δ maps the slot's features to their own shape.
    seen = {}
    hook = slot.module.register_forward_hook(lambda m, i, o: seen.update(i=i[0].shape, o=o.shape))
    assert torch.equal(model(x), expected)  # I1 at α = 0 (TRAINING)
    hook.remove()
    assert seen["i"] == seen["o"]

    hook = slot.module.register_forward_hook(lambda m, i, o: torch.full_like(o, float("nan")))
    assert torch.equal(model(x), expected)  # I1 even when δ returns NaN
    hook.remove()

    # I2: host gradients equal the seedless host's; the seed learns (non-zero gradient).
    bare.train()
    model.train()
    assert torch.equal(backward(bare, x, target), backward(model, x, target))  # I1 in training mode
    bare_grads, seeded_grads = host_grads(bare), host_grads(model)
    assert bare_grads.keys() == seeded_grads.keys()
    assert all(torch.equal(bare_grads[k], seeded_grads[k]) for k in bare_grads)
    assert any(p.grad is not None and bool(p.grad.ne(0).any()) for p in slot.module.parameters())

    # I4: with a non-zero δ, FOSSILIZED passes J_δ upstream; PROBATIONARY (same values) does not.
    perturb(slot.module)
    rules = model.rules()
    probation = drive_to(state, rules, slot_id, Stage.PROBATIONARY)
    assert model.sync_to(probation).restaged == (slot_id,)
    backward(model, x, target)
    probation_grads = host_grads(model)
    assert model.sync_to(drive_to(probation, rules, slot_id, Stage.FOSSILIZED)).fossilized == (slot_id,)
    backward(model, x, target)
    fossil_grads = host_grads(model)
    up, down = upstream_downstream(model)
    assert not torch.equal(fossil_grads[up], probation_grads[up])
    assert not torch.equal(fossil_grads[up], bare_grads[up])
    assert torch.equal(fossil_grads[down], probation_grads[down])


# --- sync_to ---------------------------------------------------------------------------------


def test_sync_is_idempotent_and_mirrors_every_stage():
    model = make_model("fashion-mnist")
    rules = model.rules()
    state = seeded(model, "mid", "depthwise")
    change = model.sync_to(state)
    module = model.slot("mid").module
    assert model.sync_to(state).empty and model.slot("mid").module is module
    assert change.added == ("mid",)
    blending = drive_to(state, rules, "mid", Stage.BLENDING)
    assert model.sync_to(blending).restaged == ("mid",)
    slot = model.slot("mid")
    assert slot.alpha.item() == pytest.approx(blending.slot("mid").seed.alpha)
    assert slot.alpha.dtype == torch.float32 and slot.alpha.dim() == 0
    assert "slots.1.alpha" not in model.state_dict()  # non-persistent: the state is the alpha store
    assert model.structure_key() == ((None, False, False), ("depthwise", False, False), (None, False, False))
    culled = drive_to(blending, rules, "mid", Stage.CULLED)
    assert model.sync_to(culled).removed == ("mid",)
    assert slot.module is None and slot.alpha.item() == 0.0
    assert model.param_counts() == lifecycle.param_counts(culled, model.host_params)


def test_sync_refuses_germinated_and_mismatched_blueprints():
    model = make_model("fashion-mnist")
    state = seeded(model, "mid", "depthwise")
    model.sync_to(state)
    seed = state.slot("mid").seed
    germinated = attrs.evolve(seed, stage=Stage.GERMINATED, previous_stage=Stage.DORMANT,
                              history=((Stage.GERMINATED, seed.germinated_epoch),))
    with pytest.raises(SyncError, match="GERMINATED"):
        model.sync_to(_with_seed(state, "mid", germinated))
    other = attrs.evolve(seed, blueprint="norm", blueprint_index=1, n_params=33)
    with pytest.raises(SyncError, match="holds mid#0 \\(depthwise\\)"):
        model.sync_to(_with_seed(state, "mid", other))
    assert model.slot("mid").blueprint == "depthwise"  # nothing changed
    wrong_topology = make_model("tiny")
    with pytest.raises(SyncError, match="cnn lifecycle state"):
        wrong_topology.sync_to(state)


def _with_seed(state, slot_id, seed):
    slots = tuple(attrs.evolve(s, seed=seed) if s.slot_id == slot_id else s for s in state.slots)
    return attrs.evolve(state, slots=slots)


def test_seed_init_follows_the_seed_sequence_rule():
    state = seeded(make_model("fashion-mnist"), "mid", "depthwise")
    a, b, c = make_model("fashion-mnist", run_seed=5), make_model("fashion-mnist", run_seed=5), \
        MorphogeneticModel(make_model("fashion-mnist").host, run_seed=5, episode=1)
    for m in (a, b, c):
        m.sync_to(state)
    # §8.1 spelled out: run seed 5, episode 0, env 0, slot index 1, first germination.
    word = np.random.SeedSequence([5, 0, 0, 1, 1]).generate_state(1, np.uint64)[0]
    expected = build_blueprint("cnn", "depthwise", 16, torch.Generator().manual_seed(int(word)))
    assert seed_generator(5, 0, 0, 1, 1).initial_seed() == int(word)
    pa, pb, pc = (list(m.slot("mid").module.parameters()) for m in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(pa, expected.parameters(), strict=True))
    assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert not torch.equal(pa[0], pc[0])  # a fresh PPO episode draws fresh seed weights


def test_rules_refuse_a_config_with_other_knobs():
    model = make_model("fashion-mnist")
    with pytest.raises(ConfigError, match="input_grad_from"):
        model.rules(LifecycleConfig(input_grad_from=Stage.BLENDING))


def test_input_grad_from_blending_releases_the_seed_input_earlier():
    model = make_model("fashion-mnist", config=LifecycleConfig(input_grad_from=Stage.BLENDING))
    model.sync_to(seeded(model, "mid", "norm", Stage.BLENDING))
    assert model.structure_key()[1] == ("norm", False, True)


# --- counterfactuals (§8.2, §8.3, §11 item 13) -----------------------------------------------


def _snapshot(model: MorphogeneticModel) -> tuple:
    tensors = {n: t.clone() for n, t in [*model.named_parameters(), *model.named_buffers()]}
    knobs = [(s.knobs, s.stage, s.blueprint, s.seed_id) for s in model.seed_slots()]
    return tensors, knobs, model.structure_key(), model.training


def _same(a: tuple, b: tuple) -> bool:
    return (a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
            and a[1:] == b[1:])


@pytest.mark.parametrize("preset", ["cifar10-deep", "tiny"])
def test_variants_equal_separate_forwards_and_mutate_nothing(preset):
    model = mixed_model(preset)
    run_mixed(model, on_boundary=model.sync_to)
    perturb(model)
    model.eval()
    x, _ = sample_batch(model, batch=3)
    live = [s.slot_id for s in model.seed_slots() if s.module is not None]
    variants = [{}, *({s: 0.0} for s in live), *({s: 1.0} for s in live),
                {live[0]: 0.25, live[-1]: 0.0, "cooling": 0.0}]
    before = _snapshot(model)
    stacked = model.forward_variants(x, variants)
    assert stacked.shape == (len(variants), *model(x).shape)
    tiled = x.repeat(len(variants), *([1] * (x.dim() - 1)))
    for v, variant in enumerate(variants):
        # Exact against a separate forward of the same (tiled) batch: per-sample alphas are exact.
        assert torch.equal(stacked[v], model(tiled, variant)[v * len(x):(v + 1) * len(x)])
        # Against the plain batch only up to rounding: CPU conv/matmul kernels depend on batch size.
        torch.testing.assert_close(stacked[v], model(x, variant), rtol=1e-5, atol=1e-4)
    assert torch.equal(model(x, {"cooling": 0.0}), model(x))  # empty slot at 0: a no-op
    assert _same(before, _snapshot(model))


def test_override_zero_is_exactly_the_empty_slot():
    model = make_model("fashion-mnist")
    model.eval()
    x, _ = sample_batch(model)
    expected = model(x)
    model.sync_to(seeded(model, "late", "conv_heavy", Stage.FOSSILIZED))
    perturb(model.slot("late").module)
    assert not torch.equal(model(x), expected)
    assert torch.equal(model(x, {"late": 0.0}), expected)
    assert torch.equal(model(x, {"late": torch.tensor(0.0)}), expected)
    assert torch.equal(model.forward_variants(x, [{"late": 0.0}])[0], expected)


def test_override_refusals():
    model = make_model("fashion-mnist")
    model.sync_to(seeded(model, "mid", "norm"))
    x, _ = sample_batch(model)
    model.train()
    model(x, {})  # an empty override is fine in training mode
    with pytest.raises(OverrideError, match="eval mode"):
        model(x, {"mid": 0.0})
    with pytest.raises(OverrideError, match="eval mode"):
        model.forward_variants(x, [{}])
    model.eval()
    with pytest.raises(OverrideError, match="empty"):
        model(x, {"early": 0.5})
    with pytest.raises(OverrideError, match="outside"):
        model(x, {"mid": 1.5})
    with pytest.raises(OverrideError, match="no slot"):
        model(x, {"nowhere": 0.0})
    with pytest.raises(OverrideError, match="empty"):
        model.forward_variants(x, [{}, {"late": 1.0}])


# --- optimizer groups (§8.5) -----------------------------------------------------------------


def _names(optimizer: torch.optim.Optimizer) -> list[str]:
    return [g["name"] for g in optimizer.param_groups]


@attrs.define
class _GroupScene:
    """A fashion-mnist model, its AdamW over `param_groups`, and one batch to take optimizer steps on."""

    model: MorphogeneticModel
    optimizer: torch.optim.Optimizer
    batch: tuple[torch.Tensor, torch.Tensor]

    @property
    def host_group(self) -> dict:
        return self.optimizer.param_groups[0]

    def sync(self, state) -> None:
        self.model.sync_to(state)
        sync_optimizer(self.optimizer, self.model)

    def mirror(self, state) -> None:
        """What the trainer does at a boundary: sync the model and the optimizer, then train a step."""
        self.sync(state)
        train_step(self.model, self.optimizer, *self.batch)


def test_optimizer_groups_follow_germinate_fossilize_and_cull():
    model = make_model("fashion-mnist")
    scene = _GroupScene(model, torch.optim.AdamW(param_groups(model, host_lr=1e-3, seed_lr=1e-2, weight_decay=5e-4)),
                        sample_batch(model))
    host_group, rules = scene.host_group, model.rules()
    assert _names(scene.optimizer) == ["host"]
    state = _germinated_mid_gets_a_seed_group_with_zero_state(scene, rules)
    state = _fossilized_mid_keeps_its_parameters_and_state(scene, rules, state)
    state = _culled_late_loses_its_group_and_state(scene, rules, state)
    assert scene.host_group is host_group and host_group["params"] == list(model.host.parameters())
    state = _regerminated_late_starts_from_zero_state(scene, rules, state)
    assert model.param_counts() == lifecycle.param_counts(state, model.host_params)


def _germinated_mid_gets_a_seed_group_with_zero_state(scene: _GroupScene, rules):
    state = boundary(initial(scene.model), rules, germinate_action(initial(scene.model), rules, "mid", "depthwise"))
    scene.sync(state)
    seed_params = list(scene.model.slot("mid").module.parameters())
    seed_group = scene.optimizer.param_groups[1]
    assert _names(scene.optimizer) == ["host", "seed:mid"]
    training_scale = scene.model.lifecycle_config.stage_lr_scale[0]
    assert (seed_group["lr"], seed_group["weight_decay"]) == (pytest.approx(1e-2 * training_scale), 5e-4)
    assert seed_group["betas"] == scene.host_group["betas"]
    assert all(p not in scene.optimizer.state for p in seed_params)  # zero state at E2
    train_step(scene.model, scene.optimizer, *scene.batch)
    assert all(p in scene.optimizer.state for p in seed_params)
    return state


def _fossilized_mid_keeps_its_parameters_and_state(scene: _GroupScene, rules, state):
    optimizer, seed_params = scene.optimizer, list(scene.model.slot("mid").module.parameters())
    state = drive_to(state, rules, "mid", Stage.PROBATIONARY, on_boundary=scene.mirror)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(1e-2)  # the TRAINING scale ends with TRAINING
    kept = {id(p): {k: v.clone() for k, v in optimizer.state[p].items()} for p in seed_params}
    state = drive_to(state, rules, "mid", Stage.FOSSILIZED)
    scene.sync(state)
    assert _names(optimizer) == ["host", "fossil:mid"]
    fossil = optimizer.param_groups[1]
    assert fossil["params"] == seed_params and fossil["lr"] == scene.host_group["lr"]
    for p in seed_params:  # E8 moves the state with the parameters
        assert all(torch.equal(optimizer.state[p][k], v) for k, v in kept[id(p)].items())
    return state


def _culled_late_loses_its_group_and_state(scene: _GroupScene, rules, state):
    state = boundary(state, rules, germinate_action(state, rules, "late", "norm"))
    scene.mirror(state)
    culled_params = list(scene.model.slot("late").module.parameters())
    assert _names(scene.optimizer) == ["host", "fossil:mid", "seed:late"]
    assert all(p in scene.optimizer.state for p in culled_params)
    state = drive_to(state, rules, "late", Stage.CULLED, on_boundary=scene.mirror)
    assert _names(scene.optimizer) == ["host", "fossil:mid"]
    assert all(p not in scene.optimizer.state for p in culled_params)
    return state


def _regerminated_late_starts_from_zero_state(scene: _GroupScene, rules, state):
    state = drive_to(state, rules, "late", Stage.DORMANT, on_boundary=scene.mirror)
    state = boundary(state, rules, germinate_action(state, rules, "late", "norm"))
    scene.sync(state)
    assert _names(scene.optimizer) == ["host", "fossil:mid", "seed:late"]
    assert all(p not in scene.optimizer.state for p in scene.model.slot("late").module.parameters())
    return state
