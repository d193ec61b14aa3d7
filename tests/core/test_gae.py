"""GAE, episode layout and advantage statistics on hand-computed examples (docs/rl.md §5), plus compiled == eager
(docs/rl.md §10 item 6) for the whole rollout-side pipeline."""

import pytest
import torch

from esper.core.gae import episode_arrays, explained_variance, gae, normalize_advantages

F64 = torch.float64


def _t(*xs: float, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.tensor(xs, dtype=dtype)


def test_hand_computed_trajectory():
    # δ = [1 + .5 − 1, 2 + .5 − 1, 3 + 0·10 − 1] = [.5, 1.5, 2]; d·λ = .25 → A = [1, 2, 2].
    adv, ret = gae(_t(1, 2, 3), _t(0.5, 0.5, 0.0), _t(1, 1, 1), torch.tensor(10.0, dtype=F64), 0.5)
    assert adv.tolist() == [1.0, 2.0, 2.0]
    assert ret.tolist() == [2.0, 3.0, 3.0]


def test_bootstrap_enters_through_the_last_discount():
    adv, _ = gae(_t(0.0), _t(0.5), _t(1.0), 4.0, 0.9)  # a Python float bootstrap is accepted too
    assert adv.tolist() == [0.0 + 0.5 * 4.0 - 1.0]


def test_per_step_lambda_cuts_the_recursion():
    adv, _ = gae(_t(1, 1, 1), _t(1, 1, 1), _t(0, 0, 0), torch.tensor(0.0, dtype=F64), _t(1.0, 0.0, 1.0))
    assert adv.tolist() == [2.0, 1.0, 1.0]  # λ_1 = 0 stops A_1 from seeing A_2


def test_stop_target_gradients_detaches_values_and_bootstrap():
    values = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)
    boot = torch.tensor(1.5, dtype=F64, requires_grad=True)
    rewards, discounts = _t(1, 2), _t(0.9, 0.9)
    adv, ret = gae(rewards, discounts, values, boot, 0.5)
    assert not adv.requires_grad and not ret.requires_grad
    adv, _ = gae(rewards, discounts, values, boot, 0.5, stop_target_gradients=False)
    g_v, g_b = torch.autograd.grad(adv.sum(), (values, boot))
    # A_0 + A_1 = δ_0 + 1.45 δ_1 with δ_0 = r_0 + .9 v_1 − v_0, δ_1 = r_1 + .9 b − v_1.
    torch.testing.assert_close(g_v, _t(-1.0, 0.9 - 1.45))
    torch.testing.assert_close(g_b, torch.tensor(0.9 * 1.45, dtype=F64))


def test_episode_layout_of_a_cut_episode():
    r, d, lam, v, boot = episode_arrays(_t(1, 2, 9, 9), _t(0.5, 0.6, 0.7, 0.8), _t(1, 1, 0, 0), _t(0, 0, 0, 0),
                                        0.9, 0.8)
    assert r.tolist() == [1.0, 2.0, 0.0, 0.0]
    assert d.tolist() == [0.9, 0.9, 0.0, 0.0]
    assert lam.tolist() == [0.8, 0.0, 0.0, 0.0]
    assert v.tolist() == [0.5, 0.6, 0.7, 0.0]  # v_2 = V(o_{T_v}) is the bootstrap of the cut
    assert boot.item() == 0.0
    adv, _ = gae(r, d, v, boot, lam)
    assert adv[1].item() == pytest.approx(2.0 + 0.9 * 0.7 - 0.6, abs=1e-12)


def test_episode_layout_of_a_full_episode_with_bool_masks():
    valid = torch.tensor([True, True, True])
    terminal = torch.tensor([False, False, True])
    r, d, lam, v, boot = episode_arrays(_t(1, 2, 3), _t(0.5, 0.6, 0.7), valid, terminal, 0.9, 0.8)
    assert d.tolist() == [0.9, 0.9, 0.0] and lam.tolist() == [0.8, 0.8, 0.0]
    assert v.tolist() == [0.5, 0.6, 0.7]
    adv, _ = gae(r, d, v, boot, lam)
    assert adv[2].item() == pytest.approx(3.0 - 0.7, abs=1e-12)


def test_normalize_hand_example():
    adv = _t(1.0, 3.0, 100.0)
    out = normalize_advantages(adv, _t(1, 1, 0))  # μ = 2, σ² = 2 / (2 − 1) = 2
    s = 2.0**0.5 + 1e-8
    torch.testing.assert_close(out, _t(-1 / s, 1 / s, 0.0))
    single = normalize_advantages(_t(5.0, 7.0), _t(1, 0))  # one valid entry: σ = 0, Â = 0
    assert single.tolist() == [0.0, 0.0]


def test_explained_variance_examples():
    valid = _t(1, 1, 1, 0)
    returns = _t(1, 2, 3, 50)
    assert explained_variance(returns, returns, valid).item() == 1.0
    assert explained_variance(torch.zeros(4, dtype=F64), returns, valid).item() == pytest.approx(0.0, abs=1e-12)
    assert explained_variance(_t(1, 2, 3, 0), _t(4, 4, 4, 9), valid).item() == 0.0  # Var(G) = 0


def _gae_variants(r, d, v, b, lam_vec, rb, db, vb, bb, lamb):
    return (
        gae(r, d, v, b, 0.97),
        gae(r, d, v, b, lam_vec),
        torch.func.vmap(gae, in_dims=(0, 0, 0, 0, None))(rb, db, vb, bb, 0.97),
        torch.func.vmap(gae)(rb, db, vb, bb, lamb),
    )


def _rollout_pipeline(rewards, values, valid, terminal):
    r, d, lam, v, b = torch.func.vmap(episode_arrays, in_dims=(0, 0, 0, 0, None, None))(
        rewards, values, valid, terminal, 0.995, 0.97)
    adv, ret = torch.func.vmap(gae)(r, d, v, b, lam)
    return normalize_advantages(adv, valid), ret, explained_variance(values, ret, valid)


def test_compiled_gae_equals_eager():
    g = torch.Generator().manual_seed(0)
    n, t = 3, 7
    rb, vb, db = (torch.randn(n, t, generator=g), torch.randn(n, t, generator=g), torch.rand(n, t, generator=g))
    bb, lamb = torch.randn(n, generator=g), torch.rand(n, t, generator=g)
    args = (rb[0], db[0], vb[0], bb[0], lamb[0], rb, db, vb, bb, lamb)
    compiled = torch.compile(_gae_variants, fullgraph=True, dynamic=False)(*args)
    for got, want in zip(compiled, _gae_variants(*args), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_compiled_rollout_pipeline_equals_eager():
    g = torch.Generator().manual_seed(1)
    n, e = 4, 6
    rewards, values = torch.randn(n, e, generator=g), torch.randn(n, e, generator=g)
    kept = torch.tensor([6, 3, 1, 5])
    valid = (torch.arange(e)[None] < kept[:, None]).float()
    terminal = torch.zeros(n, e)
    terminal[0, -1] = 1.0
    compiled = torch.compile(_rollout_pipeline, fullgraph=True, dynamic=False)(rewards, values, valid, terminal)
    for got, want in zip(compiled, _rollout_pipeline(rewards, values, valid, terminal), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
