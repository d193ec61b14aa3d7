"""Counterfactual variants share their prefix (docs/lifecycle.md §8.3): for random live slots and
random variant sets, `forward_variants` equals the tiled batch it replaced, up to float rounding, on
a CNN and a transformer host; and the tree never runs a segment on more groups than there are variants.

The tiled reference is the old pass: the batch tiled V times (variant-major) and, at every slot a
variant overrides, a per-sample alpha (the slot's own alpha where a variant leaves it alone).
The shared pass runs each segment on fewer rows than the tiled one, so bit for bit holds only where the
kernels give each row the same bits whatever the row count (this CPU's sgemm does for multiples of 4
rows at two threads, not at one thread for every conv): the check allows 1e-6 of the logits' scale.
"""

import functools
import itertools

import torch
from hypothesis import given
from hypothesis import strategies as st
from profiles import scaled

from esper.core.blend import knobs_for
from esper.core.catalogue import catalogue_for
from esper.core.stages import Stage
from esper.shell.model import MorphogeneticModel
from esper.shell.nets.blueprints import build_blueprint
from esper.shell.nets.hosts import host_for

PRESETS = ("fashion-mnist", "tiny")
STAGES = (Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY, Stage.FOSSILIZED)
ALPHAS = st.sampled_from([0.0, 1.0, 0.5]) | st.floats(0.0, 1.0, width=32)
BATCH = 4  # rows a multiple of 4: see the module docstring


@functools.cache
def bare_model(preset: str) -> MorphogeneticModel:
    host = host_for(preset, torch.Generator().manual_seed(0))
    return MorphogeneticModel(host, run_seed=0).eval()


@functools.cache
def batch(preset: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    config = bare_model(preset).host.config
    if preset == "tiny":
        return torch.randint(0, config.vocab_size, (BATCH, 9), generator=generator)
    return torch.randn(BATCH, *config.input_shape, generator=generator)


@st.composite
def live_models(draw: st.DrawFn) -> MorphogeneticModel:
    """The preset's model with a perturbed seed (random blueprint, stage, alpha) in a random subset of slots."""
    model = bare_model(draw(st.sampled_from(PRESETS)))
    blueprints = [entry.name for entry in catalogue_for(model.topology).germinable]
    for slot in model.seed_slots():
        slot.clear(Stage.DORMANT)
        if not draw(st.booleans()):
            continue
        name, stage = draw(st.sampled_from(blueprints)), draw(st.sampled_from(STAGES))
        generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        module = build_blueprint(model.topology, name, slot.dim, generator)
        with torch.no_grad():
            for p in module.parameters():  # a zero-initialised last layer would hide δ
                p.add_(0.2 * torch.randn(p.shape, generator=generator))
        slot.install(module.eval(), f"seed-{slot.slot_id}", name)
        slot.stage, slot.knobs = stage, knobs_for(stage)
        slot.alpha.fill_(draw(ALPHAS) if stage == Stage.BLENDING else float(stage != Stage.TRAINING))
    return model


def variant_lists(model: MorphogeneticModel) -> st.SearchStrategy[list[dict[str, float]]]:
    one = st.fixed_dictionaries({}, optional={
        slot.slot_id: ALPHAS if slot.module is not None else st.just(0.0) for slot in model.seed_slots()})
    return st.lists(one, min_size=1, max_size=6)


def tiled_reference(model: MorphogeneticModel, x: torch.Tensor, variants: list[dict[str, float]]) -> torch.Tensor:
    n = len(variants)
    override = {}
    for slot in model.seed_slots():
        values = [variant.get(slot.slot_id) for variant in variants]
        if slot.module is None or all(v is None for v in values):
            continue
        per_variant = torch.stack([slot.alpha if v is None else torch.tensor(v) for v in values])
        override[slot.slot_id] = per_variant.repeat_interleave(len(x))
    tiled = x.repeat(n, *([1] * (x.dim() - 1)))
    return model(tiled, override).unflatten(0, (n, len(x)))


@scaled(0.625)
@given(data=st.data())
def test_shared_prefix_equals_the_tiled_batch(data: st.DataObject) -> None:
    model = data.draw(live_models())
    variants = data.draw(variant_lists(model))
    x = batch("tiny" if model.topology == "transformer" else "fashion-mnist")
    with torch.inference_mode():
        shared, tiled = model.forward_variants(x, variants), tiled_reference(model, x, variants)
    assert shared.shape == tiled.shape
    torch.testing.assert_close(shared, tiled, rtol=1e-6, atol=1e-6 * float(tiled.abs().max()))
    tree = model.variant_tree(variants)
    assert tree.widths[0] == 1 and all(a <= b for a, b in itertools.pairwise(tree.widths))
    assert tree.widths[-1] == len(set(tree.leaves)) <= len(variants)
