"""PolicyNet (docs/rl.md §4): size, init, act/evaluate agreement, determinism and irrelevant heads."""

import math

import pytest
import torch
from torch import Tensor

from esper.core.actions import Op
from esper.core.errors import ConfigError
from esper.core.rl_config import RLConfig
from esper.core.sampling import MaskTensors, Noise, draw_noise, masked_logits, relevance
from esper.shell.nets.policy import PolicyNet

D, S, K, T3 = 87, 3, 6, 3
HEADS = ("op_head", "slot_head", "blueprint_head", "tempo_head")


def _net(seed: int = 0, **kwargs) -> PolicyNet:
    return PolicyNet(D, S, K, generator=torch.Generator().manual_seed(seed), **kwargs)


def random_masks(g: torch.Generator, shape: tuple[int, ...], n_slots: int = S, n_bp: int = K) -> MaskTensors:
    """Masks as `legality.masks` builds them: WAIT's dummy slot row, op valid iff its row has a true
    entry, no all-false blueprint row, all tempi valid."""
    slot = torch.rand(*shape, 4, n_slots, generator=g) < 0.5
    slot[..., 0, :] = False
    slot[..., 0, 0] = True
    bp = torch.rand(*shape, n_slots, n_bp, generator=g) < 0.5
    bp[..., 0] |= ~bp.any(-1)
    return MaskTensors(slot.any(-1), slot, bp, torch.ones(*shape, T3, dtype=torch.bool))


def _rollout(net: PolicyNet, obs: Tensor, masks: MaskTensors, g: torch.Generator) -> tuple[Tensor, ...]:
    """Act step by step over [B, T] with the carried (h, c); stack to [B, T, ...]."""
    b, t = obs.shape[:2]
    hc = net.initial_state(b)
    actions, logps, values = [], [], []
    for i in range(t):
        step_masks = MaskTensors(masks.op[:, i], masks.slot[:, i], masks.blueprint[:, i], masks.tempo[:, i])
        a, lp, v, hc = net.act(obs[:, i], step_masks, hc, draw_noise(g, b, S, K))
        actions.append(a)
        logps.append(lp)
        values.append(v)
    return torch.stack(actions, 1), torch.stack(logps, 1), torch.stack(values, 1)


def _batch(seed: int, b: int = 4, t: int = 7) -> tuple[Tensor, MaskTensors]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, D, generator=g), random_masks(g, (b, t))


def test_parameter_count_matches_the_block_table():
    n = sum(p.numel() for p in _net().parameters())
    features = D * 128 + 128 + 2 * 128
    memory = 4 * 128 * (128 + 128) + 2 * 4 * 128 + 2 * 128
    heads = sum((d_in * 64 + 64) + (64 * d_out + d_out)
                for d_in, d_out in ((128, 4), (128 + 4, S), (128 + S, K), (128 + S + K, T3), (128, 1)))
    assert n == features + memory + heads == 187_281


def _singular_values(w: Tensor) -> Tensor:
    return torch.linalg.svdvals(w.detach())


def test_init_follows_the_spec():
    net = _net()
    h = net.hidden
    bias_ih, bias_hh = net.lstm.bias_ih_l0.detach(), net.lstm.bias_hh_l0.detach()
    assert torch.all(bias_ih[h:2 * h] == 1.0)
    assert torch.all(bias_ih[:h] == 0) and torch.all(bias_ih[2 * h:] == 0) and torch.all(bias_hh == 0)
    for w in (net.lstm.weight_ih_l0, net.lstm.weight_hh_l0):
        assert torch.allclose(_singular_values(w), torch.ones(h), atol=1e-4)
    for norm in (net.features[1], net.memory_norm):
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    for name in (*HEADS, "value_head"):
        first, last = getattr(net, name)[0], getattr(net, name)[-1]
        assert torch.all(first.bias == 0) and torch.all(last.bias == 0)
        assert torch.allclose(_singular_values(first.weight), torch.full((64,), math.sqrt(2)), atol=1e-4)
        gain = 1.0 if name == "value_head" else 0.01
        assert torch.allclose(_singular_values(last.weight), torch.tensor(gain), rtol=1e-4)
    assert torch.allclose(_singular_values(net.features[0].weight), torch.full((D,), math.sqrt(2)), atol=1e-4)


def test_init_is_deterministic_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = _net(7), _net(7), _net(8)
    assert torch.equal(torch.get_rng_state(), state)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert not torch.equal(a.op_head[0].weight, c.op_head[0].weight)


def test_op_prior_is_the_untrained_op_heads_log_prior_and_changes_nothing_else():
    prior = (1.0, 0.0, -2.0, 0.5)
    plain, primed = _net(3), _net(3, op_prior=prior)
    assert torch.equal(primed.op_head[-1].bias, torch.tensor(prior))
    for (name, x), y in zip(plain.state_dict().items(), primed.state_dict().values(), strict=True):
        assert name == "op_head.2.bias" or torch.equal(x, y), name
    obs, _ = _batch(5)
    with torch.no_grad():
        h, _ = primed._memory(obs, None)
        probs = torch.softmax(primed.op_head(h), -1)
    # The last layer's gain is 0.01, so the untrained logits are the prior give or take a few hundredths.
    assert torch.allclose(probs, torch.softmax(torch.tensor(prior), -1).expand_as(probs), atol=0.02)


def test_op_prior_must_be_four_finite_logits():
    for bad in ((0.0, 0.0, -2.0), (0.0, math.inf, 0.0, 0.0)):
        with pytest.raises(ConfigError, match="op_prior needs 4 finite logits"):
            RLConfig(op_prior=bad)


def test_initial_state_is_zero():
    h, c = _net().initial_state(5)
    assert h.shape == c.shape == (1, 5, 128)
    assert not h.any() and not c.any()


def test_act_shapes_and_canonical_irrelevant_heads():
    net = _net()
    obs, masks = _batch(1, b=64, t=1)
    step = MaskTensors(masks.op[:, 0], masks.slot[:, 0], masks.blueprint[:, 0], masks.tempo[:, 0])
    actions, logp, value, (h, c) = net.act(obs[:, 0], step, net.initial_state(64),
                                           draw_noise(torch.Generator().manual_seed(2), 64, S, K))
    assert actions.dtype == torch.int64 and actions.shape == (64, 4)
    assert logp.dtype == torch.float32 and logp.shape == (64, 4) and value.shape == (64,)
    assert h.shape == c.shape == (1, 64, 128)
    u = relevance(actions[:, 0])
    assert torch.all(actions[u == 0] == 0) and torch.all(logp[u == 0] == 0)
    assert torch.all(logp <= 0)
    assert torch.all(step.op.gather(1, actions[:, :1]))


def test_deterministic_act_is_the_argmax_and_ignores_noise():
    net = _net(3)
    obs, masks = _batch(4, b=16, t=1)
    step = MaskTensors(masks.op[:, 0], masks.slot[:, 0], masks.blueprint[:, 0], masks.tempo[:, 0])
    hc = net.initial_state(16)
    g = torch.Generator().manual_seed(5)
    a1, lp1, v1, _ = net.act(obs[:, 0], step, hc, draw_noise(g, 16, S, K), deterministic=True)
    a2, lp2, _, _ = net.act(obs[:, 0], step, hc, draw_noise(g, 16, S, K), deterministic=True)
    assert torch.equal(a1, a2) and torch.equal(lp1, lp2)
    # Equal uniforms add the same Gumbel offset to every category: Gumbel-max becomes argmax.
    half = Noise(*(torch.full((16, n), 0.5) for n in (4, S, K, T3)))
    a3, _, v3, _ = net.act(obs[:, 0], step, hc, half)
    assert torch.equal(a1, a3) and torch.equal(v1, v3)
    h, _ = net._memory(obs, None)
    op_argmax = masked_logits(net.op_head(h[:, 0]), step.op).argmax(-1)
    assert torch.equal(a1[:, 0], op_argmax)


def test_act_and_evaluate_agree_over_a_sequence():
    net = _net(9)
    obs, masks = _batch(10)
    actions, logp_act, value_act = _rollout(net, obs, masks, torch.Generator().manual_seed(11))
    logp, ent, value = net.evaluate(obs, actions, masks)
    assert (logp - logp_act).abs().max().item() < 1e-5
    assert (value - value_act).abs().max().item() < 1e-5
    assert logp.shape == ent.shape == (4, 7, 4) and value.shape == (4, 7)
    assert torch.all((ent >= 0) & (ent <= 1))
    u = relevance(actions[..., 0])
    assert torch.all(ent[u == 0] == 0)
    assert (actions[..., 0] == Op.GERMINATE).any()  # the sequence exercised every head


def test_sampled_actions_respect_the_masks():
    net = _net(12)
    obs, masks = _batch(13, b=8, t=6)
    actions, _, _ = _rollout(net, obs, masks, torch.Generator().manual_seed(14))
    op, slot, bp, tempo = actions.unbind(-1)
    assert torch.all(masks.op.gather(-1, op[..., None]))
    rows = masks.slot.gather(-2, op[..., None, None].expand(-1, -1, 1, S)).squeeze(-2)
    used = op != Op.WAIT
    assert torch.all(rows.gather(-1, slot[..., None]).squeeze(-1)[used])
    germ = op == Op.GERMINATE
    bp_rows = masks.blueprint.gather(-2, slot[..., None, None].expand(-1, -1, 1, K)).squeeze(-2)
    assert torch.all(bp_rows.gather(-1, bp[..., None]).squeeze(-1)[germ])
    assert torch.all(tempo[~germ] == 0) and torch.all(bp[~germ] == 0)


def _with_op(actions: Tensor, op: int) -> Tensor:
    out = actions.clone()
    out[..., 0] = op
    return out


def _scrambled(actions: Tensor, heads: tuple[int, ...], g: torch.Generator) -> Tensor:
    out = actions.clone()
    for h in heads:
        out[..., h] = torch.randint(0, 50, out.shape[:-1], generator=g)  # in range or far out of it
    return out


@pytest.mark.parametrize(("op", "irrelevant"), [(Op.WAIT, (1, 2, 3)), (Op.CULL, (2, 3)), (Op.FOSSILIZE, (2, 3))])
def test_irrelevant_stored_entries_change_nothing(op: Op, irrelevant: tuple[int, ...]):
    net = _net(15)
    obs, masks = _batch(16)
    g = torch.Generator().manual_seed(17)
    base = _with_op(torch.zeros(4, 7, 4, dtype=torch.long), op)
    base[..., 1] = 0 if op == Op.WAIT else torch.randint(0, S, (4, 7), generator=g)
    ref = net.evaluate(obs, base, masks)
    other = net.evaluate(obs, _scrambled(base, irrelevant, g), masks)
    for x, y in zip(ref, other, strict=True):
        assert torch.equal(x, y)
    assert torch.all(ref[0][..., list(irrelevant)] == 0) and torch.all(ref[1][..., list(irrelevant)] == 0)


@pytest.mark.parametrize(("op", "silent"), [(Op.WAIT, HEADS[1:]), (Op.CULL, HEADS[2:]), (Op.FOSSILIZE, HEADS[2:])])
def test_irrelevant_heads_get_exactly_zero_gradient(op: Op, silent: tuple[str, ...]):
    net = _net(18)
    obs, masks = _batch(19)
    g = torch.Generator().manual_seed(20)
    actions = _with_op(_scrambled(torch.zeros(4, 7, 4, dtype=torch.long), (1, 2, 3), g) % S, op)
    masks = MaskTensors(torch.ones_like(masks.op), torch.ones_like(masks.slot), masks.blueprint, masks.tempo)
    logp, ent, _ = net.evaluate(obs, actions, masks)
    (logp.sum() + ent.sum()).backward()
    for name in silent:
        for p in getattr(net, name).parameters():
            assert p.grad is None or torch.all(p.grad == 0), name
    live = [h for h in HEADS if h not in silent]
    for name in live:  # the relevant heads do learn, so the zero above is not vacuous
        assert getattr(net, name)[-1].weight.grad.abs().sum() > 0, name


def test_autocast_is_disabled_inside_the_policy():
    net = _net(21)
    obs, masks = _batch(22, b=2, t=3)
    actions, _, _ = _rollout(net, obs, masks, torch.Generator().manual_seed(23))
    plain = net.evaluate(obs, actions, masks)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = net.evaluate(obs, actions, masks)
        cast_actions, _, _ = _rollout(net, obs, masks, torch.Generator().manual_seed(23))
    assert torch.equal(actions, cast_actions)
    for x, y in zip(plain, cast, strict=True):
        assert y.dtype == torch.float32 and torch.equal(x, y)
