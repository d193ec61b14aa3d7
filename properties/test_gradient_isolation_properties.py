"""docs/lifecycle.md §5 gradient isolation on a real network: a TRAINING seed reads a detached h (straight
through), so every host gradient equals, bit for bit, the gradient of the same model without that seed.

Drawn: which slots of the fashion-mnist CNN host hold a TRAINING seed (at least one), their blueprints,
and other slots' BLENDING seeds at drawn alphas (present in both passes, so the host's gradients differ
from the seedless host's but must not depend on the TRAINING seeds). Every seed's weights are moved off
their birth values first: at birth a seed's last layer is zero, so δ has a zero Jacobian and even an
undetached input would leave the host's gradients alone. `esper.shell.blueprint_check`'s "gradient
isolation" clause checks the same on one probe per blueprint; this checks it over the draws.
"""

import functools

import attrs
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from esper.core import lifecycle
from esper.core.actions import FactoredAction
from esper.core.legality import masks
from esper.core.seed import LifecycleState
from esper.core.stages import Stage
from esper.shell.model import MorphogeneticModel
from esper.shell.nets.hosts import host_for

BATCH = 2
SIDE = 8  # 8×8 images, not 28×28: the host pools to 1×1 at its last block; every op stays the same, 12× cheaper
alphas = st.one_of(st.just(1.0), st.floats(0.0, 1.0, exclude_min=True, width=32))


@functools.cache
def _probe() -> tuple[MorphogeneticModel, lifecycle.LifecycleState, torch.Tensor, torch.Tensor, dict]:
    """The model (built once: reused by every example, always synced back to empty), its empty state,
    a batch, the loss weights and the host's tensors as built."""
    host = host_for("fashion-mnist", torch.Generator().manual_seed(0))
    model = MorphogeneticModel(host, run_seed=0)
    empty = lifecycle.initial_state("cnn", host.slot_specs, set(model.slot_ids))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, host.config.input_shape[0], SIDE, SIDE, generator=gen)
    weights = torch.randn(BATCH, 10, generator=gen)
    return model, empty, x, weights, {k: v.clone() for k, v in host.state_dict().items()}


ROLES = ("training", "training", "blending", "empty")
N_SLOTS = 3  # the fashion-mnist host's early, mid, late


def _states(roles: tuple[str, ...], blueprints: tuple[int, ...],
            alphas: tuple[float, ...]) -> tuple[LifecycleState, LifecycleState]:
    """(the state whose slots hold `roles`' seeds, the same state with the TRAINING slots empty). A seed's
    blueprint is its draw modulo the blueprints fitting its slot."""
    model, state, *_ = _probe()
    rules = model.rules()
    for s, role in enumerate(roles):
        if role == "empty":
            continue
        fitting = [k for k, ok in enumerate(masks(state, rules).blueprint[s]) if ok]
        germinate = FactoredAction.germinate(s, fitting[blueprints[s] % len(fitting)], 0)
        state, _ = lifecycle.apply_action(state, germinate, rules)
        if role == "blending":
            seed = state.slots[s].seed
            seed = attrs.evolve(seed, stage=Stage.BLENDING, previous_stage=Stage.TRAINING, ramp_step=1,
                                alpha=alphas[s], history=(*seed.history, (Stage.BLENDING, state.epoch)))
            state = _with_seed(state, s, seed)
    assert [s.stage == Stage.TRAINING for s in state.slots] == [r == "training" for r in roles]
    without = state
    for s, role in enumerate(roles):
        if role == "training":
            without = _with_seed(without, s, None)
    return state, without


def _with_seed(state: LifecycleState, s: int, seed) -> LifecycleState:
    slots = list(state.slots)
    slots[s] = attrs.evolve(slots[s], seed=seed)
    return attrs.evolve(state, slots=tuple(slots))


def _host_grads(state: LifecycleState, noise: int) -> dict[str, torch.Tensor]:
    """Host gradients of Σ out ⊙ w in train mode with `state`'s seeds, each moved by slot-seeded noise."""
    model, empty, x, weights, host_tensors = _probe()
    model.sync_to(empty)  # fresh modules: a BLENDING seed gets the same weights in both passes
    model.sync_to(state)
    with torch.no_grad():
        for k, slot in enumerate(model.seed_slots()):
            gen = torch.Generator().manual_seed(noise + k)
            for p in [] if slot.module is None else slot.module.parameters():
                p.add_(0.5 * torch.randn(p.shape, generator=gen))
    model.host.load_state_dict(host_tensors)
    model.train()
    model.zero_grad(set_to_none=True)
    (model(x) * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.host.named_parameters()}
    model.sync_to(empty)
    return grads


@given(st.lists(st.sampled_from(ROLES), min_size=N_SLOTS, max_size=N_SLOTS), st.integers(0, N_SLOTS - 1),
       st.lists(st.integers(0, 5), min_size=N_SLOTS, max_size=N_SLOTS),
       st.lists(alphas, min_size=N_SLOTS, max_size=N_SLOTS), st.integers(0, 2**16))
@example(["empty", "empty", "training"], 2, [0, 0, 0], [1.0] * 3, 0)  # shrunk: an undetached `norm` at late
def test_training_seeds_leave_every_host_gradient_bit_identical(roles, forced, blueprints, alphas, noise):
    roles[forced] = "training"  # at least one TRAINING seed
    with_seeds, without = _states(tuple(roles), tuple(blueprints), tuple(alphas))
    got, want = _host_grads(with_seeds, noise), _host_grads(without, noise)
    changed = [n for n in want if not torch.equal(got[n], want[n])]
    assert not changed, f"host gradients changed by TRAINING seeds {roles}: {changed}"
