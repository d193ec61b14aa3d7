"""PPO loss on hand examples (docs/rl.md §6): ratios at 1, policy and value clipping, the entropy schedule, exact
exclusion of irrelevant heads (§10 item 11), a hand-computed B = 1, T = 2 batch, and compiled == eager (item 6)."""

import math

import attrs
import pytest
import torch
import torch.utils._pytree as torch_pytree

from esper.core.ppo import PPOBatch, PPOCoefs, PPODiagnostics, entropy_coef, ppo_loss
from esper.core.rl_config import RLConfig

F64 = torch.float64
COEFS = PPOCoefs(clip_eps=0.2, value_clip_eps=0.2, value_coef=0.5, entropy_coef=0.05)
WAIT, GERMINATE, CULL = (1.0, 0, 0, 0), (1.0, 1, 1, 1), (1.0, 1, 0, 0)


def _t(x, dtype=F64) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype)


def _random_batch(b: int, t: int, seed: int, dtype=F64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, PPOBatch]:
    g = torch.Generator().manual_seed(seed)
    ops = torch.randint(0, 3, (b, t), generator=g)
    relevance = torch.tensor([WAIT, GERMINATE, CULL], dtype=dtype)[ops]
    valid = torch.ones(b, t, dtype=dtype)
    valid[0, t // 2:] = 0.0  # env 0 was cut half way
    logp_old = -torch.rand(b, t, 4, generator=g, dtype=dtype) * 2
    batch = PPOBatch(logp_old=logp_old, value_old=torch.randn(b, t, generator=g, dtype=dtype), relevance=relevance,
                     valid=valid, advantages=torch.randn(b, t, generator=g, dtype=dtype),
                     returns=torch.randn(b, t, generator=g, dtype=dtype))
    logp = logp_old + 0.4 * torch.randn(b, t, 4, generator=g, dtype=dtype)
    ent = torch.rand(b, t, 4, generator=g, dtype=dtype)
    value = batch.value_old + 0.5 * torch.randn(b, t, generator=g, dtype=dtype)
    return logp, ent, value, batch


def _hand_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, PPOBatch]:
    """Step 0 GERMINATE with Â = 1, step 1 WAIT with Â = −2; irrelevant entries of step 1 hold garbage (9)."""
    logp_old = torch.zeros(1, 2, 4, dtype=F64)
    logp = _t([[[math.log(1.1), math.log(1.5), math.log(0.5), 0.0], [math.log(0.7), 9.0, 9.0, 9.0]]])
    ent = _t([[[0.5, 0.4, 0.3, 0.2], [0.7, 9.0, 9.0, 9.0]]])
    batch = PPOBatch(logp_old=logp_old, value_old=_t([[0.5, 0.5]]), relevance=_t([[GERMINATE, WAIT]]),
                     valid=_t([[1.0, 1.0]]), advantages=_t([[1.0, -2.0]]), returns=_t([[2.0, 0.0]]))
    return logp, ent, _t([[1.0, 0.0]]), batch


def test_hand_computed_tiny_batch():
    loss, d = ppo_loss(*_hand_batch(), COEFS)
    # Step 0 (Â = 1): −min(ρ, clip ρ) per head = −1.1, −1.2, −0.5, −1; step 1 (Â = −2): max(1.4, 1.6) = 1.6.
    torch.testing.assert_close(d.policy_loss, _t([0.25, -0.6, -0.25, -0.5]))
    assert d.total_policy_loss.item() == pytest.approx(-1.1, abs=1e-12)
    # Values: max(1, (0.7 − 2)²) = 1.69 and max(0, 0.3²) = 0.09 → L_V = 0.5 · 1.78 / 2.
    assert d.value_loss.item() == pytest.approx(0.445, abs=1e-12)
    torch.testing.assert_close(d.entropy, _t([0.6, 0.4, 0.3, 0.2]))
    assert d.entropy_loss.item() == pytest.approx(-0.05 * 1.5, abs=1e-12)
    assert loss.item() == pytest.approx(-1.1 + 0.5 * 0.445 - 0.075, abs=1e-12)
    assert d.loss.item() == loss.item()
    torch.testing.assert_close(d.clip_frac, _t([0.5, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(d.relevant_frac, _t([1.0, 0.5, 0.5, 0.5]))
    torch.testing.assert_close(d.ratio_min, _t([0.7, 1.5, 0.5, 1.0]))
    torch.testing.assert_close(d.ratio_max, _t([1.1, 1.5, 0.5, 1.0]))
    torch.testing.assert_close(d.ratio_mean, _t([0.9, 1.5, 0.5, 1.0]))
    torch.testing.assert_close(d.ratio_std, _t([0.08**0.5, 0.0, 0.0, 0.0]))
    k3 = lambda r: (r - 1) - math.log(r)  # noqa: E731
    torch.testing.assert_close(d.approx_kl, _t([(k3(1.1) + k3(0.7)) / 2, k3(1.5), k3(0.5), 0.0]))
    assert d.joint_approx_kl.item() == pytest.approx((k3(1.1 * 1.5 * 0.5) + k3(0.7)) / 2, abs=1e-12)
    assert d.max_abs_ratio_dev.item() == pytest.approx(0.5, abs=1e-12)


def test_ratios_one_when_logp_equals_logp_old():
    _, ent, value, batch = _random_batch(3, 5, seed=0)
    loss, d = ppo_loss(batch.logp_old.clone(), ent, value, batch, COEFS)
    valid, u, adv = batch.valid, batch.relevance, batch.advantages
    want = -(valid[..., None] * u * adv[..., None]).sum() / valid.sum()
    assert d.total_policy_loss.item() == pytest.approx(want.item(), abs=1e-12)
    assert loss.item() == pytest.approx((want + 0.5 * d.value_loss + d.entropy_loss).item(), abs=1e-12)
    assert d.clip_frac.eq(0).all() and d.approx_kl.eq(0).all()
    assert d.max_abs_ratio_dev.item() == 0.0 and d.joint_approx_kl.item() == 0.0
    acted = d.relevant_frac > 0
    assert d.ratio_mean[acted].eq(1).all() and d.ratio_min[acted].eq(1).all() and d.ratio_max[acted].eq(1).all()


def test_policy_clipping_is_reported_and_stops_the_gradient():
    _, ent, value, batch = _random_batch(2, 4, seed=1)
    batch = attrs.evolve(batch, advantages=batch.advantages.abs() + 0.1, valid=torch.ones(2, 4, dtype=F64))
    logp = (batch.logp_old + math.log(1.5)).requires_grad_()
    loss, d = ppo_loss(logp, ent, value, batch, COEFS)
    acted = d.relevant_frac > 0
    assert d.clip_frac[acted].eq(1).all() and d.clip_frac[~acted].eq(0).all()
    (grad,) = torch.autograd.grad(loss, logp)
    assert grad.eq(0).all()  # Â > 0 and ρ = 1.5 > 1 + ε: the pessimistic term is the clipped constant
    batch = attrs.evolve(batch, advantages=-batch.advantages)  # Â < 0: the unclipped term is the maximum
    (grad,) = torch.autograd.grad(ppo_loss(logp, ent, value, batch, COEFS)[0], logp)
    assert (grad.ne(0) == (batch.relevance > 0)).all()


def test_value_clipping_hand_example():
    logp, ent, _, batch = _hand_batch()
    batch = attrs.evolve(batch, value_old=_t([[0.0, 0.0]]), returns=_t([[1.0, 1.0]]))
    value = _t([[1.0, 0.1]]).requires_grad_()
    loss, d = ppo_loss(logp, ent, value, batch, COEFS)
    # Step 0: V hit G but moved 1 > ε_v: max(0, (0.2 − 1)²) = 0.64. Step 1 inside the clip: (0.1 − 1)² = 0.81.
    assert d.value_loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2, abs=1e-12)
    (grad,) = torch.autograd.grad(loss, value)
    torch.testing.assert_close(grad, _t([[0.0, 0.5 * 0.5 * 2 * (0.1 - 1.0) / 2]]))


def test_entropy_coefficient_schedule():
    cfg = RLConfig()  # start 0.05, end 0.01, anneal over the first half of U
    assert entropy_coef(0, 50, cfg) == 0.05
    assert entropy_coef(10, 50, cfg) == pytest.approx(0.05 - 0.04 * 10 / 25)
    assert entropy_coef(25, 50, cfg) == pytest.approx(0.01)
    assert entropy_coef(49, 50, cfg) == pytest.approx(0.01)
    slow = RLConfig(entropy_coef_start=0.1, entropy_coef_end=0.02, entropy_anneal_frac=1.0)
    assert entropy_coef(5, 10, slow) == pytest.approx(0.06)
    coefs = PPOCoefs.from_config(slow, entropy_coef(5, 10, slow))
    assert (coefs.clip_eps, coefs.value_clip_eps, coefs.value_coef) == (0.2, 0.2, 0.5)
    assert coefs.entropy_coef == pytest.approx(0.06)


def test_irrelevant_heads_change_neither_loss_nor_gradient():
    logp, ent, value, batch = _random_batch(3, 6, seed=2)
    irrelevant = batch.relevance == 0
    assert irrelevant.any()

    def run(lp, lp_old, en):
        lp = lp.clone().requires_grad_()
        en = en.clone().requires_grad_()
        loss, d = ppo_loss(lp, en, value, attrs.evolve(batch, logp_old=lp_old), COEFS)
        return loss, d, torch.autograd.grad(loss, (lp, en))

    base = run(logp, batch.logp_old, ent)
    garbage = torch.full_like(logp, 1e4)
    moved = run(torch.where(irrelevant, garbage, logp), torch.where(irrelevant, -garbage, batch.logp_old),
                torch.where(irrelevant, torch.full_like(ent, float("inf")), ent))
    assert torch.equal(base[0], moved[0])
    for leaf_a, leaf_b in zip(torch_pytree.tree_leaves(base[1]), torch_pytree.tree_leaves(moved[1]), strict=True):
        assert torch.equal(leaf_a, leaf_b)
    for ga, gb in zip(base[2], moved[2], strict=True):
        assert torch.equal(ga, gb)
        assert ga[irrelevant].eq(0).all()


def test_a_head_that_never_acted_reports_zeros():
    logp, ent, value, batch = _random_batch(2, 3, seed=3)
    batch = attrs.evolve(batch, relevance=torch.tensor(WAIT, dtype=F64).expand(2, 3, 4).clone())
    _, d = ppo_loss(logp, ent, value, batch, COEFS)
    for name in PPODiagnostics.HEAD_FIELDS:
        stat = getattr(d, name)
        assert stat.shape == (4,) and torch.isfinite(stat).all(), name
        assert stat[1:].eq(0).all(), name


def test_diagnostics_are_a_detached_pytree_of_tensors():
    logp, ent, value, batch = _random_batch(2, 3, seed=4)
    _, d = ppo_loss(logp.requires_grad_(), ent, value.requires_grad_(), batch, COEFS)
    leaves = torch_pytree.tree_leaves(d)
    assert len(leaves) == len(attrs.fields(PPODiagnostics))
    assert all(isinstance(x, torch.Tensor) and not x.requires_grad for x in leaves)
    assert all(getattr(d, n).shape == (4,) for n in PPODiagnostics.HEAD_FIELDS)
    with pytest.raises(TypeError):
        PPODiagnostics(loss=torch.zeros(()))


def test_compiled_ppo_loss_equals_eager():
    logp, ent, value, batch = _random_batch(2, 5, seed=5, dtype=torch.float32)

    def loss_and_grads(lp, en, v, b):
        lp, v = lp.clone().requires_grad_(), v.clone().requires_grad_()
        loss, d = compiled(lp, en, v, b, COEFS)
        return loss, d, torch.autograd.grad(loss, (lp, v))

    compiled = torch.compile(ppo_loss, fullgraph=True, dynamic=False)
    c_loss, c_diag, c_grads = loss_and_grads(logp, ent, value, batch)
    compiled = ppo_loss
    e_loss, e_diag, e_grads = loss_and_grads(logp, ent, value, batch)
    torch.testing.assert_close(c_loss, e_loss, rtol=1e-6, atol=1e-6)
    for name in (f.name for f in attrs.fields(PPODiagnostics)):
        torch.testing.assert_close(getattr(c_diag, name), getattr(e_diag, name), rtol=1e-6, atol=1e-6, msg=name)
    for got, want in zip(c_grads, e_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
