"""Masked sampling and the policy on real lifecycle views (docs/rl.md §10 items 10 and 12).

Masks are exact: 10⁴ sampled joint actions on a reachable view are all allowed by the masks and
accepted by the lifecycle step, and together they reach every allowed action. Masked distributions:
masked probabilities are exactly 0 and Ĥ ∈ [0, 1] (1 for equal valid logits, 0 for one valid action).
"""

import functools
import math

import attrs
import torch
from hypothesis import given
from hypothesis import strategies as st
from profiles import scaled

from esper.core import lifecycle
from esper.core.actions import FactoredAction, Op
from esper.core.config import Rules
from esper.core.events import ActionRejected
from esper.core.legality import can_apply, masks
from esper.core.sampling import (
    MaskTensors,
    draw_noise,
    head_entropy,
    head_masks,
    mask_tensors,
    masked_logits,
    to_actions,
)
from esper.core.seed import LifecycleState
from esper.shell.nets.policy import PolicyNet
from esper.testing.strategies import reachable_views

D = 8
N_SAMPLES = 10_000


@functools.cache
def _policy(n_slots: int, n_bp: int, n_tempo: int) -> PolicyNet:
    # Small widths: legality does not depend on them, and 10⁴-row acts stay cheap.
    return PolicyNet(D, n_slots, n_bp, n_tempo, hidden=16, head_hidden=16,
                     generator=torch.Generator().manual_seed(n_slots * 100 + n_bp))


def _sizes(view: LifecycleState, rules: Rules) -> tuple[int, int, int]:
    return len(view.slots), len(rules.catalogue.germinable), len(rules.config.tempo_choices)


def _repeat(m: MaskTensors, n: int) -> MaskTensors:
    return MaskTensors(*(x.expand(n, *x.shape) for x in (m.op, m.slot, m.blueprint, m.tempo)))


def _accepted(view: LifecycleState, action: FactoredAction, rules: Rules) -> bool:
    """The lifecycle step takes the action: strict mode does not raise, no ActionRejected event."""
    strict = attrs.evolve(rules, config=attrs.evolve(rules.config, strict=True))
    _, events = lifecycle.apply_action(view, action, strict)
    return not any(isinstance(e, ActionRejected) for e in events)


@scaled(0.375)
@given(reachable_views(max_steps=30), st.integers(0, 2**31 - 1))
def test_sampled_actions_are_exactly_the_allowed_ones(rules_view: tuple[Rules, LifecycleState], seed: int):
    rules, view = rules_view
    n_slots, n_bp, n_tempo = _sizes(view, rules)
    action_masks = masks(view, rules)
    net = _policy(n_slots, n_bp, n_tempo)
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(D, generator=g).expand(N_SAMPLES, D)
    batch = _repeat(mask_tensors(action_masks), N_SAMPLES)
    actions, logp, _, _ = net.act(obs, batch, net.initial_state(N_SAMPLES),
                                  draw_noise(g, N_SAMPLES, n_slots, n_bp, n_tempo))
    assert torch.all(logp <= 0) and torch.isfinite(logp).all()
    sampled = {to_actions(row) for row in torch.unique(actions, dim=0)}
    for action in sampled:
        assert action == action.canonical()
        assert action_masks.allows(action), action
        assert _accepted(view, action, rules), action
    # At init the heads are near uniform, so 10⁴ draws reach every allowed action (p ≥ 1/288 each).
    assert sampled == set(action_masks.allowed_actions())


@given(reachable_views(max_steps=30))
def test_masks_equal_the_legality_predicate_and_no_row_is_empty(rules_view: tuple[Rules, LifecycleState]):
    rules, view = rules_view
    n_slots, n_bp, n_tempo = _sizes(view, rules)
    action_masks = masks(view, rules)
    assert action_masks.op[Op.WAIT]
    for op in Op:
        for s in range(n_slots):
            for k in range(n_bp):
                for t in range(n_tempo):
                    a = FactoredAction(op, s, k, t)
                    assert action_masks.allows(a) == can_apply(view, a, rules).passed, a
    # Every (op, slot) a sampler can reach (op valid, slot valid for it or irrelevant) gives
    # non-empty rows to the later heads.
    m = mask_tensors(action_masks)
    grid = torch.cartesian_prod(torch.arange(4), torch.arange(n_slots))
    op, slot = grid.unbind(-1)
    tiled = _repeat(m, len(grid))
    op_row, slot_row, bp_row, tempo_row = head_masks(tiled, op, slot, torch.zeros_like(op))
    reachable = op_row.gather(-1, op[:, None]).squeeze(-1) & slot_row.gather(-1, slot[:, None]).squeeze(-1)
    assert reachable.any()  # WAIT with its dummy slot 0 at least
    for row in (op_row, slot_row, bp_row, tempo_row):
        assert row[reachable].any(-1).all()
    assert m.blueprint.any(-1).all() and m.tempo.any()


@given(st.integers(1, 12), st.integers(0, 2**31 - 1), st.floats(0.0, 1e3))
def test_masked_distributions(n: int, seed: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, n, generator=g) * scale
    mask = torch.rand(64, n, generator=g) < 0.5
    mask[torch.arange(64), torch.randint(0, n, (64,), generator=g)] = True
    z = masked_logits(logits, mask)
    assert torch.all(torch.softmax(z, -1)[~mask] == 0.0)
    ent = head_entropy(z, mask)
    assert torch.all((ent >= 0) & (ent <= 1))
    assert torch.all(ent[mask.sum(-1) == 1] == 0)
    equal = head_entropy(masked_logits(torch.full((64, n), scale), mask), mask)
    many = mask.sum(-1) > 1
    assert torch.allclose(equal[many], torch.ones(int(many.sum())), atol=1e-5)
    # Ĥ is H / log n_valid of the masked distribution.
    p = torch.softmax(z.double(), -1)
    h = -(torch.where(mask, p * p.clamp_min(1e-300).log(), 0)).sum(-1)
    expected = torch.where(many, h / torch.log(mask.sum(-1).clamp(min=2).double()), 0).clamp(0, 1)
    assert torch.allclose(ent.double(), expected, atol=1e-4 + 1e-4 * math.log(max(n, 2)))
