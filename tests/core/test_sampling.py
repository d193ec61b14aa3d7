"""Masked sampling (docs/rl.md §3): mask tensors, masked logits, normalised entropy, Gumbel-max, head rows."""

import math

import pytest
import torch
import torch.utils._pytree as torch_pytree

from esper.core.actions import RELEVANCE, ActionMasks, FactoredAction, Op
from esper.core.sampling import (
    RELEVANCE_TABLE,
    MaskTensors,
    Noise,
    draw_noise,
    gumbel_argmax,
    head_entropy,
    head_masks,
    mask_tensors,
    masked_logits,
    relevance,
    stack_masks,
    to_actions,
)

S, K = 3, 4
ONEHOT_S = (True, False, False)
MASKS = ActionMasks(
    op=(True, True, True, False),
    slot=(ONEHOT_S, (False, True, True), (True, False, False), (False, False, False)),
    blueprint=((True, False, False, False), (False, True, True, False), (False, False, True, True)),
    tempo=(True, True, True),
)


def _row(*ops: int) -> torch.Tensor:
    return torch.tensor(ops, dtype=torch.long)


def test_mask_tensors_shapes_and_values():
    m = mask_tensors(MASKS)
    assert m.op.dtype == torch.bool and m.op.shape == (4,)
    assert m.slot.shape == (4, S) and m.blueprint.shape == (S, K) and m.tempo.shape == (3,)
    assert m.slot[Op.GERMINATE].tolist() == [False, True, True]
    assert m.blueprint[2].tolist() == [False, False, True, True]


def test_stack_masks_twice_gives_env_by_step_axes():
    steps = [mask_tensors(MASKS)] * 5
    per_env = stack_masks(steps)
    both = stack_masks([per_env, per_env])
    assert both.op.shape == (2, 5, 4) and both.slot.shape == (2, 5, 4, S)
    assert both.blueprint.shape == (2, 5, S, K) and both.tempo.shape == (2, 5, 3)
    assert both.batch_shape == (2, 5)
    assert torch.equal(both.blueprint[1, 3], mask_tensors(MASKS).blueprint)


def test_mask_tensors_are_a_pytree():
    leaves, _ = torch_pytree.tree_flatten(mask_tensors(MASKS))
    assert len(leaves) == 4
    noise = draw_noise(torch.Generator().manual_seed(0), 2, S, K)
    assert len(torch_pytree.tree_leaves(noise)) == 4


def test_masked_logits_is_float32_and_masked_probabilities_are_exactly_zero():
    g = torch.Generator().manual_seed(1)
    logits = (torch.rand(64, 7, generator=g) * 100 - 50).to(torch.bfloat16)
    mask = torch.rand(64, 7, generator=g) < 0.5
    mask[:, 0] = True
    z = masked_logits(logits, mask)
    assert z.dtype == torch.float32
    assert torch.all(z[~mask] == -1e4)
    probs = torch.softmax(z, -1)
    assert torch.all(probs[~mask] == 0.0)
    assert torch.allclose(probs.sum(-1), torch.ones(64))


def test_masked_logits_custom_value():
    z = masked_logits(torch.zeros(3), torch.tensor([True, False, True]), value=-7.0)
    assert z.tolist() == [0.0, -7.0, 0.0]


def test_entropy_is_one_for_equal_valid_logits_and_zero_for_a_single_valid_action():
    mask = torch.tensor([[True, True, False, True], [False, False, True, False], [True] * 4])
    logits = torch.full((3, 4), 0.3)
    logits[:, 2] = -5.0  # the masked entry of row 0 must not matter
    ent = head_entropy(masked_logits(logits, mask), mask)
    assert ent[0].item() == pytest.approx(1.0, abs=1e-6)
    assert ent[1].item() == 0.0
    h = torch.softmax(logits[2], -1)
    assert ent[2].item() == pytest.approx(float(-(h * h.log()).sum() / math.log(4)), abs=1e-6)


def test_entropy_in_unit_interval_and_finite_gradient():
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(500, 6, generator=g) * 30).requires_grad_()
    mask = torch.rand(500, 6, generator=g) < 0.4
    mask[torch.arange(500), torch.randint(0, 6, (500,), generator=g)] = True
    ent = head_entropy(masked_logits(logits, mask), mask)
    assert torch.all((ent >= 0) & (ent <= 1))
    ent.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[~mask] == 0)


def test_gumbel_argmax_matches_softmax_frequencies():
    g = torch.Generator().manual_seed(3)
    logits = torch.tensor([0.0, 1.0, -1.0, 0.5])
    mask = torch.tensor([True, True, False, True])
    z = masked_logits(logits, mask)
    n = 40_000
    samples = gumbel_argmax(z.expand(n, 4), torch.rand(n, 4, generator=g))
    freq = torch.bincount(samples, minlength=4).float() / n
    assert freq[2].item() == 0.0
    assert torch.allclose(freq, torch.softmax(z, -1), atol=0.01)


def test_gumbel_argmax_with_equal_noise_is_argmax_and_extreme_uniforms_stay_finite():
    z = torch.tensor([[0.1, 2.0, -1e4], [3.0, 2.0, 1.0]])
    assert gumbel_argmax(z, torch.full((2, 3), 0.5)).tolist() == [1, 0]
    extreme = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # clamped away from log(0)
    picks = gumbel_argmax(z, extreme)
    assert picks[0].item() != 2  # a masked entry never wins, even against U = 0
    assert picks.tolist() == [0, 1]


def test_draw_noise_uses_only_the_passed_generator():
    state = torch.get_rng_state()
    a = draw_noise(torch.Generator().manual_seed(4), 5, S, K)
    b = draw_noise(torch.Generator().manual_seed(4), 5, S, K, n_tempo=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(a, Noise)
    assert a.op.shape == (5, 4) and a.slot.shape == (5, S) and a.blueprint.shape == (5, K)
    assert a.tempo.shape == (5, 3)
    for x, y in zip(torch_pytree.tree_leaves(a), torch_pytree.tree_leaves(b), strict=True):
        assert torch.equal(x, y)
    c = draw_noise(torch.Generator().manual_seed(5), 5, S, K)
    assert not torch.equal(a.op, c.op)


def test_relevance_table_follows_actions():
    for op in Op:
        assert RELEVANCE_TABLE[op].tolist() == [float(u) for u in RELEVANCE[op]]
    u = relevance(torch.tensor([[0, 1], [2, 3]]))
    assert u.shape == (2, 2, 4)
    assert u[0, 0].tolist() == [1.0, 0.0, 0.0, 0.0] and u[0, 1].tolist() == [1.0] * 4


def test_head_masks_select_conditional_rows_and_dummies():
    m = mask_tensors(MASKS)
    op, slot, bp = _row(0, 1, 1, 2), _row(2, 1, 2, 0), _row(3, 1, 2, 3)
    batch = stack_masks([m] * 4)
    op_m, slot_m, bp_m, tempo_m = head_masks(batch, op, slot, bp)
    assert torch.equal(op_m, batch.op)
    # WAIT: every later head is the dummy row, whatever was stored (slot 2 here).
    assert slot_m[0].tolist() == [True, False, False]
    assert bp_m[0].tolist() == [True, False, False, False]
    assert tempo_m[0].tolist() == [True, False, False]
    # GERMINATE: slot row of GERMINATE, blueprint row of the chosen slot, all tempi.
    assert slot_m[1].tolist() == [False, True, True]
    assert bp_m[1].tolist() == list(MASKS.blueprint[1]) and bp_m[2].tolist() == list(MASKS.blueprint[2])
    assert tempo_m[1].tolist() == [True] * 3
    # CULL: its slot row, blueprint and tempo dummies.
    assert slot_m[3].tolist() == [True, False, False]
    assert bp_m[3].tolist() == [True, False, False, False] and tempo_m[3].tolist() == [True, False, False]
    for row in (slot_m, bp_m, tempo_m):
        assert row.any(-1).all()


def test_head_masks_batch_over_envs_and_steps_and_vmap_agrees():
    m = stack_masks([stack_masks([mask_tensors(MASKS)] * 3)] * 2)
    g = torch.Generator().manual_seed(6)
    op = torch.randint(0, 3, (2, 3), generator=g)
    slot = torch.randint(0, S, (2, 3), generator=g)
    bp = torch.randint(0, K, (2, 3), generator=g)
    batched = head_masks(m, op, slot, bp)
    assert [x.shape for x in batched] == [(2, 3, 4), (2, 3, S), (2, 3, K), (2, 3, 3)]
    mapped = torch.func.vmap(torch.func.vmap(head_masks))(m, op, slot, bp)
    for x, y in zip(batched, mapped, strict=True):
        assert torch.equal(x, y)


def test_to_actions_reads_a_row():
    assert to_actions(torch.tensor([1, 2, 3, 1])) == FactoredAction.germinate(2, 3, 1)
    assert to_actions(torch.tensor([0, 0, 0, 0])) == FactoredAction.wait()
    assert to_actions(torch.tensor([2, 1, 0, 0])).op is Op.CULL


def test_mask_tensors_type():
    assert isinstance(mask_tensors(MASKS), MaskTensors)
