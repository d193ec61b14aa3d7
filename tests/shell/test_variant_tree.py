"""Counterfactual variants share their prefix (docs/lifecycle.md §8.3, issue 17 item 5): the tree's
shape, bitwise equality with the tiled batch it replaces, and the cost model (each segment runs once
per group of variants still identical there)."""

from collections.abc import Mapping, Sequence

import pytest
import torch
from seedbed_drive import (
    PATIENT,
    boundary,
    drive_to,
    germinate_action,
    initial,
    make_model,
    mixed_model,
    run_mixed,
    sample_batch,
)
from torch import nn

from esper.core.lifecycle import measurement_plan
from esper.core.seed import LifecycleState
from esper.core.stages import Stage
from esper.shell.epoch_numbers import EpochLayout
from esper.shell.model import MorphogeneticModel
from esper.shell.variant_tree import variant_tree

THREE = (("early", True), ("mid", True), ("late", True))


def perturb(module: nn.Module, seed: int = 11) -> None:
    """Noise in every parameter, so a zero-initialised last layer no longer hides δ."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))


def tiled_reference(model: MorphogeneticModel, x: torch.Tensor,
                    variants: Sequence[Mapping[str, float]]) -> torch.Tensor:
    """The pass forward_variants replaced: the batch tiled V times, a per-sample alpha at every overridden slot."""
    n, batch = len(variants), x.shape[0]
    override = {}
    for slot in model.seed_slots():
        values = [variant.get(slot.slot_id) for variant in variants]
        if slot.module is None or all(v is None for v in values):
            continue
        per_variant = torch.stack([slot.alpha if v is None else torch.tensor(float(v)) for v in values])
        override[slot.slot_id] = per_variant.repeat_interleave(batch)
    tiled = x.repeat(n, *([1] * (x.dim() - 1)))
    return model(tiled, override).unflatten(0, (n, batch))


# --- the tree --------------------------------------------------------------------------------


def test_plan_variants_branch_once_per_varied_slot():
    # The real model, early ablated, mid ablated, late shadowed: one more group after each slot.
    tree = variant_tree([{}, {"early": 0.0}, {"mid": 0.0}, {"late": 1.0}], THREE)
    assert tree.widths == (1, 2, 3, 4)
    assert tree.leaves == (0, 1, 2, 3)
    assert [b.parents for b in tree.branches] == [(0, 0), (0, 1, 0), (0, 1, 2, 0)]
    assert [b.alphas for b in tree.branches] == [(None, 0.0), (None, None, 0.0), (None, None, None, 1.0)]


def test_equal_variants_share_a_leaf_and_empty_slots_never_split():
    tree = variant_tree([{"late": 1.0}, {}, {"late": 1.0}, {"early": 0.0}],
                        [("early", False), ("mid", True), ("late", True)])
    assert tree.branches[0] is None  # an empty slot is the identity in every variant
    assert tree.widths == (1, 1, 1, 2)
    assert tree.leaves == (0, 1, 0, 1)  # {"early": 0} at an empty slot is the real model
    only_late = variant_tree([{}, {"late": 0.0}], THREE)
    assert only_late.widths == (1, 1, 1, 2)  # the prefix up to `late` runs once
    assert not only_late.branches[0].splits and only_late.branches[0].alphas == (None,)


def test_a_uniform_override_does_not_split():
    tree = variant_tree([{"mid": 0.5}, {"mid": 0.5, "late": 0.0}], THREE)
    assert tree.widths == (1, 1, 1, 2)
    assert tree.branches[1].alphas == (0.5,)


# --- equality with the tiled batch -----------------------------------------------------------


def variant_sets(live: Sequence[str]) -> list[list[dict[str, float]]]:
    first, last = live[0], live[-1]
    return [
        [{}, *({s: 0.0} for s in live), *({s: 1.0} for s in live)],
        [{last: 0.0}, {}, {first: 1.0}, {}, {first: 1.0, last: 0.0}, {"cooling": 0.0}],  # order, duplicates
        [{first: 0.25, last: 0.0}],
        [{}],
    ]


def _grown_model(preset: str) -> tuple[MorphogeneticModel, list[str]]:
    """A model with seeds in every stage, perturbed off their zero init, in eval mode; and its live slots."""
    model = mixed_model(preset)
    run_mixed(model, on_boundary=model.sync_to)
    perturb(model)
    model.eval()
    return model, [s.slot_id for s in model.seed_slots() if s.module is not None]


@pytest.mark.parametrize("preset", ["cifar10-deep", "tiny"])
def test_shared_prefix_equals_the_tiled_batch(preset):
    """Equal up to float rounding: a segment runs on B rows in one and G·B rows in the other, and oneDNN
    may block (so sum) a convolution differently per row count and thread count; measured ≤ 1 ulp of the
    logits' scale (3e-5 on logits of ~400 with one thread, bitwise with two)."""
    model, live = _grown_model(preset)
    x, _ = sample_batch(model, batch=5)
    with torch.inference_mode():
        for variants in variant_sets(live):
            shared, tiled = model.forward_variants(x, variants), tiled_reference(model, x, variants)
            assert shared.shape == tiled.shape
            for v in range(len(variants)):
                scale = float(tiled[v].abs().max())
                torch.testing.assert_close(shared[v], tiled[v], rtol=1e-6, atol=1e-6 * scale,
                                           msg=lambda m, v=v, variants=variants: f"{variants} {v}: {m}")


@pytest.mark.parametrize("preset", ["cifar10-deep", "tiny"])
def test_shared_prefix_under_bf16_autocast(preset):
    model, live = _grown_model(preset)
    x, _ = sample_batch(model, batch=4)
    variants = variant_sets(live)[0]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        shared, tiled = model.forward_variants(x, variants), tiled_reference(model, x, variants)
    assert shared.dtype == tiled.dtype == torch.bfloat16
    assert torch.equal(shared, tiled)


# --- the cost model --------------------------------------------------------------------------


def three_live(model: MorphogeneticModel) -> LifecycleState:
    """late PROBATIONARY, mid BLENDING, early TRAINING: each varied once by the measurement plan."""
    rules, state = model.rules(), initial(model)
    for slot_id, stage in (("late", Stage.PROBATIONARY), ("mid", Stage.BLENDING), ("early", Stage.TRAINING)):
        state = boundary(state, rules, germinate_action(state, rules, slot_id, "conv_light"))
        state = drive_to(state, rules, slot_id, stage)
    assert [s.stage for s in state.slots] == [Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY]
    return state


def test_three_live_slots_run_the_prefix_once(monkeypatch):
    model = make_model("cifar10", config=PATIENT)
    state = three_live(model)
    model.sync_to(state)
    model.eval()
    variants = EpochLayout.of(measurement_plan(state)).variants
    assert len(variants) == 4  # the real model, early's shadow, mid's and late's ablations
    rows: list[tuple[str, int]] = []
    segment = model.host.segment
    monkeypatch.setattr(model.host, "segment", lambda k, h: rows.append((f"seg{k}", len(h))) or segment(k, h))
    for slot in model.seed_slots():
        delta = slot.delta
        monkeypatch.setattr(slot, "delta", lambda h, s=slot, d=delta: rows.append((s.slot_id, len(h))) or d(h))
    x, _ = sample_batch(model, batch=3)
    with torch.inference_mode():
        model.forward_variants(x, variants)
    # Segment k runs on G_k·B rows, G_k = 1 + varied slots before it; each δ once per entering group.
    assert rows == [("seg0", 3), ("early", 3), ("seg1", 6), ("mid", 6), ("seg2", 9), ("late", 9), ("seg3", 12)]
    assert model.variant_tree(variants).widths == (1, 2, 3, 4)
