"""docs/rl.md §6 / §10 item 11 as properties of `ppo_loss`: it equals a per-element oracle of the loss table, stored
samples of irrelevant heads and padded steps change neither the loss, the diagnostics nor any gradient, and the
diagnostics keep their ranges; the per-head factored advantage stream A·u_h gives the same policy gradient; and the
shards of a batch, each with the whole batch's step counts, sum to its loss, its gradients and its joint KL
(DD-PPO, docs/rl.md §12)."""

import math

import attrs
import torch
import torch.utils._pytree as torch_pytree
from hypothesis import assume, given
from hypothesis import strategies as st

from esper.core.ppo import PPOBatch, PPOCoefs, PPODiagnostics, ppo_loss, step_counts
from esper.core.xp import clip_closed

F64 = torch.float64
RELEVANCE = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=F64)  # by op


@st.composite
def cases(draw):
    b, t = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    spread = draw(st.sampled_from([0.0, 0.05, 0.5, 2.0]))  # from ratios ≡ 1 to heavy clipping
    kept = [draw(st.integers(1, t)) for _ in range(b)]
    valid = (torch.arange(t)[None] < torch.tensor(kept)[:, None]).to(F64)
    ops = torch.randint(0, 4, (b, t), generator=g)
    logp_old = -3 * torch.rand(b, t, 4, generator=g, dtype=F64)
    batch = PPOBatch(logp_old=logp_old, value_old=torch.randn(b, t, generator=g, dtype=F64),
                     relevance=RELEVANCE[ops], valid=valid, advantages=torch.randn(b, t, generator=g, dtype=F64),
                     returns=torch.randn(b, t, generator=g, dtype=F64))
    logp = logp_old + spread * torch.randn(b, t, 4, generator=g, dtype=F64)
    value = batch.value_old + spread * torch.randn(b, t, generator=g, dtype=F64)
    ent = torch.rand(b, t, 4, generator=g, dtype=F64)
    coefs = PPOCoefs(clip_eps=draw(st.sampled_from([0.1, 0.2, 0.3])), value_clip_eps=draw(st.sampled_from([0.1, 0.2])),
                     value_coef=draw(st.sampled_from([0.5, 1.0])), entropy_coef=draw(st.floats(0.0, 0.05)))
    return logp, ent, value, batch, coefs


def _oracle(logp, ent, value, batch: PPOBatch, c: PPOCoefs) -> float:
    """The loss table of docs/rl.md §6 written element by element in Python floats."""
    b, t = batch.valid.shape
    n = sum(batch.valid.flatten().tolist())
    pol, val, ent_sum, n_h = 0.0, 0.0, [0.0] * 4, [0.0] * 4
    for i in range(b):
        for s in range(t):
            if batch.valid[i, s] == 0:
                continue
            a = batch.advantages[i, s].item()
            for h in range(4):
                if batch.relevance[i, s, h] == 0:
                    continue
                rho = math.exp(logp[i, s, h].item() - batch.logp_old[i, s, h].item())
                pol += max(-rho * a, -min(max(rho, 1 - c.clip_eps), 1 + c.clip_eps) * a)
                ent_sum[h] += ent[i, s, h].item()
                n_h[h] += 1
            v, v_old, g = value[i, s].item(), batch.value_old[i, s].item(), batch.returns[i, s].item()
            v_clip = v_old + min(max(v - v_old, -c.value_clip_eps), c.value_clip_eps)
            val += max((v - g) ** 2, (v_clip - g) ** 2)
    entropy = sum(e / max(k, 1) for e, k in zip(ent_sum, n_h, strict=True))
    return pol / n + c.value_coef * 0.5 * val / n - c.entropy_coef * entropy


@given(cases())
def test_loss_equals_the_elementwise_oracle(case):
    loss, d = ppo_loss(*case)
    assert math.isclose(loss.item(), _oracle(*case), rel_tol=1e-10, abs_tol=1e-10)
    assert math.isclose(d.policy_loss.sum().item(), d.total_policy_loss.item(), rel_tol=1e-12, abs_tol=1e-12)


def _with_grads(logp, ent, value, batch, coefs):
    logp, ent, value = (x.clone().requires_grad_() for x in (logp, ent, value))
    loss, d = ppo_loss(logp, ent, value, batch, coefs)
    return loss, d, torch.autograd.grad(loss, (logp, ent, value))


def _assert_identical(a, b) -> None:
    leaves_a, leaves_b = torch_pytree.tree_leaves(a), torch_pytree.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        assert torch.equal(x, y)


@given(cases(), st.sampled_from([1e4, -1e4, float("inf"), float("nan")]), st.integers(0, 2**31 - 1))
def test_irrelevant_heads_and_padding_change_nothing(case, junk, seed):
    logp, ent, value, batch, coefs = case
    g = torch.Generator().manual_seed(seed)
    off_head = (batch.relevance == 0) | (batch.valid[..., None] == 0)
    off_step = batch.valid == 0

    def spoil(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=g, dtype=F64) * 100
        return torch.where(where, torch.where(torch.rand(x.shape, generator=g) < 0.5, junk, noise), x)

    moved_batch = attrs.evolve(batch, logp_old=spoil(batch.logp_old, off_head),
                               value_old=spoil(batch.value_old, off_step),
                               advantages=spoil(batch.advantages, off_step), returns=spoil(batch.returns, off_step))
    base = _with_grads(logp, ent, value, batch, coefs)
    moved = _with_grads(spoil(logp, off_head), spoil(ent, off_head), spoil(value, off_step), moved_batch, coefs)
    _assert_identical(base, moved)
    grads_logp, grads_ent, grads_value = base[2]
    assert grads_logp[off_head].eq(0).all() and grads_ent[off_head].eq(0).all()
    assert grads_value[off_step].eq(0).all()


def _per_head_stream_policy_loss(logp, batch: PPOBatch, clip_eps: float) -> torch.Tensor:
    """The clipped surrogate on one advantage stream per head, A_t·u_h, with no head selection at all."""
    step = batch.valid > 0
    streams = torch.where(step, batch.advantages, 0.0)[..., None] * batch.relevance  # [B, T, 4]
    rho = torch.exp(torch.where(batch.relevance > 0, logp - batch.logp_old, 0.0))
    clipped = clip_closed(rho, 1 - clip_eps, 1 + clip_eps)
    surrogate = torch.maximum(-rho * streams, -clipped * streams)
    return torch.where(step[..., None], surrogate, 0.0).sum() / batch.valid.sum().clamp(min=1)


@given(cases())
def test_policy_gradient_is_the_per_head_factored_stream(case):
    """Why there is no `factored_advantages` switch (docs/rl.md §5): selecting head h's relevant steps in
    `ppo_loss` already trains it on A_t·u_h, so a separate stream per head gives the same policy gradient."""
    logp, ent, value, batch, coefs = case
    policy_only = attrs.evolve(coefs, value_coef=0.0, entropy_coef=0.0)
    a, b = logp.clone().requires_grad_(), logp.clone().requires_grad_()
    loss, _ = ppo_loss(a, ent, value, batch, policy_only)
    stream_loss = _per_head_stream_policy_loss(b, batch, coefs.clip_eps)
    assert math.isclose(loss.item(), stream_loss.item(), rel_tol=1e-12, abs_tol=1e-12)
    assert torch.equal(torch.autograd.grad(loss, a)[0], torch.autograd.grad(stream_loss, b)[0])


@given(cases())
def test_diagnostics_keep_their_ranges(case):
    _, d = ppo_loss(*case)
    for leaf in torch_pytree.tree_leaves(d):
        assert torch.isfinite(leaf).all()
    acted = d.relevant_frac > 0
    assert (d.relevant_frac >= 0).all() and (d.relevant_frac <= 1).all() and d.relevant_frac[0].item() == 1.0
    assert (d.clip_frac >= 0).all() and (d.clip_frac <= 1).all()
    assert (d.approx_kl >= 0).all() and d.joint_approx_kl.item() >= 0 and (d.ratio_std >= 0).all()
    slack = 1e-12
    assert (d.ratio_min[acted] <= d.ratio_mean[acted] + slack).all()
    assert (d.ratio_mean[acted] <= d.ratio_max[acted] + slack).all()
    assert (d.ratio_min[acted] > 0).all()
    assert math.isclose(d.max_abs_ratio_dev.item(),
                        max((d.ratio_max[acted] - 1).abs().max().item(), (d.ratio_min[acted] - 1).abs().max().item()),
                        rel_tol=1e-12, abs_tol=1e-15)
    for name in PPODiagnostics.HEAD_FIELDS:
        assert getattr(d, name)[~acted].eq(0).all()
    assert (d.entropy >= 0).all() and (d.entropy <= 1).all()


@given(cases(), st.data())
def test_shards_with_the_whole_batch_counts_sum_to_the_whole_batch(case, data):
    """What DD-PPO's all-reduce relies on: rank r's loss on its rows of a minibatch, over the whole minibatch's
    (n, n_h), is its share: Σ_r L_r = L and Σ_r ∇L_r = ∇L (each row's gradient is the whole loss's), the
    joint KL and the loss diagnostics add up too, and max|ρ − 1| is the max of the shards'."""
    logp, ent, value, batch, coefs = case
    b = batch.valid.shape[0]
    assume(b >= 2)  # every rank holds at least one row of a minibatch (esper.shell.rl.ddppo.check_world)
    cut = data.draw(st.integers(1, b - 1))
    whole_loss, whole, whole_grads = _with_grads(logp, ent, value, batch, coefs)
    counts = step_counts(batch)
    parts = []
    for rows in (slice(0, cut), slice(cut, b)):
        x = [t[rows].clone().requires_grad_() for t in (logp, ent, value)]
        loss, d = ppo_loss(*x, torch_pytree.tree_map(lambda t, r=rows: t[r], batch), coefs, counts)
        parts.append((loss, d, torch.autograd.grad(loss, x, allow_unused=True, materialize_grads=True)))
    assert math.isclose(sum(p[0].item() for p in parts), whole_loss.item(), rel_tol=1e-12, abs_tol=1e-12)
    for j in range(3):
        assert torch.allclose(torch.cat([p[2][j] for p in parts]), whole_grads[j], rtol=1e-12, atol=1e-15)
    for name in ("joint_approx_kl", "loss", "total_policy_loss", "value_loss", "entropy", "clip_frac"):
        total = sum(getattr(p[1], name) for p in parts)
        assert torch.allclose(total, getattr(whole, name), rtol=1e-12, atol=1e-12), name
    assert max(p[1].max_abs_ratio_dev.item() for p in parts) == whole.max_abs_ratio_dev.item()
