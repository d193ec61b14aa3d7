"""PolicyNet's feed-forward trunk (docs/rl.md §4, `--rl.policy mlp`): the LSTM net's heads, masks and
interface, an empty carried state, and an output at step t that depends on o_t alone."""

import pytest
import torch
from torch import Tensor

from esper.core.actions import Op
from esper.core.sampling import MaskTensors, draw_noise, relevance
from esper.shell.nets.policy import PolicyNet

D, S, K, T3 = 87, 3, 6, 3


def _net(seed: int = 0, trunk: str = "mlp") -> PolicyNet:
    return PolicyNet(D, S, K, generator=torch.Generator().manual_seed(seed), trunk=trunk)


def _batch(seed: int, b: int = 4, t: int = 7) -> tuple[Tensor, MaskTensors]:
    """Random obs and masks as `legality.masks` builds them (WAIT's dummy slot row, no empty blueprint row)."""
    g = torch.Generator().manual_seed(seed)
    slot = torch.rand(b, t, 4, S, generator=g) < 0.5
    slot[..., 0, :] = False
    slot[..., 0, 0] = True
    bp = torch.rand(b, t, S, K, generator=g) < 0.5
    bp[..., 0] |= ~bp.any(-1)
    tempo = torch.ones(b, t, T3, dtype=torch.bool)
    return torch.randn(b, t, D, generator=g), MaskTensors(slot.any(-1), slot, bp, tempo)


def _step(masks: MaskTensors, i: int) -> MaskTensors:
    return MaskTensors(masks.op[:, i], masks.slot[:, i], masks.blueprint[:, i], masks.tempo[:, i])


def _rollout(net: PolicyNet, obs: Tensor, masks: MaskTensors, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    g, (b, t) = torch.Generator().manual_seed(seed), obs.shape[:2]
    hc, out = net.initial_state(b), []
    for i in range(t):
        a, lp, v, hc = net.act(obs[:, i], _step(masks, i), hc, draw_noise(g, b, S, K))
        assert hc[0].shape == hc[1].shape == (1, b, 0)  # the empty state is threaded through, never grown
        out.append((a, lp, v))
    return tuple(torch.stack(x, 1) for x in zip(*out, strict=True))  # type: ignore[return-value]


def test_parameter_count_replaces_the_lstm_with_one_linear():
    n = sum(p.numel() for p in _net().parameters())
    lstm = sum(p.numel() for p in _net(trunk="lstm").parameters())
    assert n == lstm - (4 * 128 * (128 + 128) + 2 * 4 * 128) + (128 * 128 + 128)
    assert not any(name.startswith("lstm") for name, _ in _net().named_parameters())


def test_unknown_trunk_is_refused():
    with pytest.raises(ValueError, match="trunk"):
        _net(trunk="gru")


def test_init_is_deterministic_from_the_generator():
    state = torch.get_rng_state()
    a, b, c = _net(7), _net(7), _net(8)
    assert torch.equal(torch.get_rng_state(), state)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert not torch.equal(a.memory[0].weight, c.memory[0].weight)


def test_act_shapes_and_evaluate_agree():
    net = _net(9)
    obs, masks = _batch(10)
    actions, logp_act, value_act = _rollout(net, obs, masks, 11)
    assert actions.shape == (4, 7, 4) and actions.dtype == torch.int64 and value_act.shape == (4, 7)
    logp, ent, value = net.evaluate(obs, actions, masks)
    assert logp.shape == ent.shape == (4, 7, 4)
    assert (logp - logp_act).abs().max().item() < 1e-5 and (value - value_act).abs().max().item() < 1e-5
    u = relevance(actions[..., 0])
    assert torch.all(actions[u == 0] == 0) and torch.all(logp[u == 0] == 0) and torch.all(ent[u == 0] == 0)


def test_step_t_depends_on_o_t_alone():
    net = _net(12)
    obs, masks = _batch(13)
    actions, _, _ = _rollout(net, obs, masks, 14)
    changed = obs.clone()
    changed[:, :3] = torch.randn(4, 3, D)  # the past differs; steps 3.. are the same
    ref, other = net.evaluate(obs, actions, masks), net.evaluate(changed, actions, masks)
    for x, y in zip(ref, other, strict=True):
        assert torch.equal(x[:, 3:], y[:, 3:]) and not torch.equal(x[:, :3], y[:, :3])


def test_sampled_actions_respect_the_masks():
    net = _net(15)
    obs, masks = _batch(16, b=8, t=6)
    actions, _, _ = _rollout(net, obs, masks, 17)
    op, slot, bp, tempo = actions.unbind(-1)
    assert torch.all(masks.op.gather(-1, op[..., None]))
    rows = masks.slot.gather(-2, op[..., None, None].expand(-1, -1, 1, S)).squeeze(-2)
    assert torch.all(rows.gather(-1, slot[..., None]).squeeze(-1)[op != Op.WAIT])
    germ = op == Op.GERMINATE
    bp_rows = masks.blueprint.gather(-2, slot[..., None, None].expand(-1, -1, 1, K)).squeeze(-2)
    assert torch.all(bp_rows.gather(-1, bp[..., None]).squeeze(-1)[germ])
    assert torch.all(tempo[~germ] == 0) and torch.all(bp[~germ] == 0)
    assert germ.any()  # every head was exercised
