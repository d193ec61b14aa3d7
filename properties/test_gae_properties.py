"""docs/rl.md §10 items 1–5 for GAE: closed-form oracle, λ limits, returns, linearity, termination vs truncation,
padding isolation, vmap == loop; plus the masked advantage statistics of §5."""

import math

import torch
from hypothesis import example, given
from hypothesis import strategies as st

from esper.core.gae import episode_arrays, explained_variance, gae, normalize_advantages

F64 = torch.float64
reals = st.floats(-10.0, 10.0, allow_nan=False)
unit = st.floats(0.0, 1.0)


@st.composite
def trajectories(draw, max_t: int = 80, per_step_lambda: bool | None = None):
    t = draw(st.integers(1, max_t))
    per_step = draw(st.booleans()) if per_step_lambda is None else per_step_lambda
    lam = draw(st.lists(unit, min_size=t, max_size=t)) if per_step else draw(unit)
    return {
        "rewards": torch.tensor(draw(st.lists(reals, min_size=t, max_size=t)), dtype=F64),
        "discounts": torch.tensor(draw(st.lists(unit, min_size=t, max_size=t)), dtype=F64),
        "values": torch.tensor(draw(st.lists(reals, min_size=t, max_size=t)), dtype=F64),
        "bootstrap": torch.tensor(draw(reals), dtype=F64),
        "lam": torch.tensor(lam, dtype=F64) if per_step else lam,
    }


def _lams(tr: dict) -> list[float]:
    lam, t = tr["lam"], tr["rewards"].shape[0]
    return lam.tolist() if isinstance(lam, torch.Tensor) else [lam] * t


def _deltas(tr: dict) -> list[float]:
    r, d, v = tr["rewards"].tolist(), tr["discounts"].tolist(), tr["values"].tolist()
    v_next = [*v[1:], tr["bootstrap"].item()]
    return [r[t] + d[t] * v_next[t] - v[t] for t in range(len(r))]


def _closed_form(tr: dict) -> list[float]:
    """A_t = Σ_{k=t}^{T−1} (Π_{j=t}^{k−1} d_j λ_j) δ_k, as a double loop in Python floats."""
    delta, d, lam = _deltas(tr), tr["discounts"].tolist(), _lams(tr)
    out = []
    for t in range(len(delta)):
        total, weight = 0.0, 1.0
        for k in range(t, len(delta)):
            total += weight * delta[k]
            weight *= d[k] * lam[k]
        out.append(total)
    return out


def _run(tr: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return gae(tr["rewards"], tr["discounts"], tr["values"], tr["bootstrap"], tr["lam"])


def _close(got: torch.Tensor, want, tol: float = 1e-10) -> None:
    torch.testing.assert_close(got, torch.as_tensor(want, dtype=F64), rtol=0.0, atol=tol)


@given(trajectories())
def test_gae_equals_the_closed_form(tr):
    adv, _ = _run(tr)
    _close(adv, _closed_form(tr))


@given(trajectories())
def test_lambda_zero_gives_the_td_error(tr):
    adv, _ = gae(tr["rewards"], tr["discounts"], tr["values"], tr["bootstrap"], 0.0)
    _close(adv, _deltas(tr), 1e-12)


@given(trajectories())
def test_lambda_one_gives_discounted_reward_plus_bootstrap_minus_value(tr):
    adv, _ = gae(tr["rewards"], tr["discounts"], tr["values"], tr["bootstrap"], 1.0)
    r, d, v, b = tr["rewards"].tolist(), tr["discounts"].tolist(), tr["values"].tolist(), tr["bootstrap"].item()
    want = []
    for t in range(len(r)):
        total, weight = 0.0, 1.0
        for k in range(t, len(r)):
            total += weight * r[k]
            weight *= d[k]
        want.append(total + weight * b - v[t])
    _close(adv, want)


@given(trajectories())
def test_returns_satisfy_the_lambda_return_recursion(tr):
    adv, ret = _run(tr)
    _close(ret, adv + tr["values"], 1e-12)
    r, d, v, lam = tr["rewards"].tolist(), tr["discounts"].tolist(), tr["values"].tolist(), _lams(tr)
    v_next, g_next, want = [*v[1:], tr["bootstrap"].item()], tr["bootstrap"].item(), []
    for t in reversed(range(len(r))):  # G_t = r_t + d_t[(1 − λ_t) v_next_t + λ_t G_{t+1}], G_T = bootstrap
        g_next = r[t] + d[t] * ((1.0 - lam[t]) * v_next[t] + lam[t] * g_next)
        want.append(g_next)
    _close(ret, want[::-1])


@given(trajectories(), trajectories(), reals, reals)
def test_advantages_are_linear(tr1, tr2, alpha, beta):
    t = min(tr1["rewards"].shape[0], tr2["rewards"].shape[0])
    d, v, b, lam = tr1["discounts"][:t], tr1["values"][:t], tr1["bootstrap"], _lams(tr1)[:t]
    lam = torch.tensor(lam, dtype=F64)
    r1, r2, zero = tr1["rewards"][:t], tr2["rewards"][:t], torch.zeros(t, dtype=F64)
    mixed, _ = gae(alpha * r1 + beta * r2, d, v, b, lam)
    a1, _ = gae(r1, d, zero, zero.sum(), lam)
    a2, _ = gae(r2, d, zero, zero.sum(), lam)
    a0, _ = gae(zero, d, v, b, lam)
    _close(mixed, alpha * a1 + beta * a2 + a0, 1e-8)


@given(trajectories(), reals)
def test_a_terminal_last_step_ignores_the_bootstrap(tr, other):
    d = tr["discounts"].clone()
    d[-1] = 0.0
    a, g = gae(tr["rewards"], d, tr["values"], tr["bootstrap"], tr["lam"])
    a2, g2 = gae(tr["rewards"], d, tr["values"], torch.tensor(other, dtype=F64), tr["lam"])
    assert torch.equal(a, a2) and torch.equal(g, g2)


@st.composite
def episodes(draw, max_e: int = 30):
    e = draw(st.integers(1, max_e))
    kept = draw(st.integers(1, e))
    valid = torch.zeros(e, dtype=F64)
    valid[:kept] = 1.0
    terminal = torch.zeros(e, dtype=F64)
    if kept == e:
        terminal[-1] = 1.0
    return {
        "rewards": torch.tensor(draw(st.lists(reals, min_size=e, max_size=e)), dtype=F64),
        "values": torch.tensor(draw(st.lists(reals, min_size=e, max_size=e)), dtype=F64),
        "valid": valid, "terminal": terminal, "kept": kept,
        "gamma": draw(st.floats(0.5, 1.0)), "lam": draw(unit),
    }


def _episode_gae(ep: dict) -> tuple[torch.Tensor, torch.Tensor]:
    r, d, lam_t, v, b = episode_arrays(ep["rewards"], ep["values"], ep["valid"], ep["terminal"], ep["gamma"],
                                       ep["lam"])
    return gae(r, d, v, b, lam_t)


@given(episodes())
def test_last_kept_step_bootstraps_only_when_cut(ep):
    adv, _ = _episode_gae(ep)
    kept, r, v = ep["kept"], ep["rewards"].tolist(), ep["values"].tolist()
    e = len(r)
    # Cut: r + γ·V(o_{T_v}) − v with V(o_{T_v}) stored at index T_v; full (terminal): nothing follows.
    want = r[kept - 1] + ep["gamma"] * v[kept] - v[kept - 1] if kept < e else r[e - 1] - v[e - 1]
    assert math.isclose(adv[kept - 1].item(), want, rel_tol=0.0, abs_tol=1e-10)


@given(episodes(), st.lists(st.floats(-1e6, 1e6), min_size=30, max_size=30), st.booleans())
def test_padding_never_changes_kept_advantages(ep, garbage, nan_padding):
    adv, ret = _episode_gae(ep)
    kept, e = ep["kept"], ep["rewards"].shape[0]
    pad = torch.tensor(garbage[: e], dtype=F64)
    if nan_padding:
        pad = torch.full_like(pad, float("nan"))
    after = torch.arange(e) > kept  # beyond the bootstrap slot T_v
    rewards = torch.where(torch.arange(e) >= kept, pad, ep["rewards"])
    values = torch.where(after, pad, ep["values"])
    terminal = torch.where(torch.arange(e) >= kept, (pad > 0).to(F64), ep["terminal"])
    adv2, ret2 = _episode_gae({**ep, "rewards": rewards, "values": values, "terminal": terminal})
    assert torch.equal(adv[:kept], adv2[:kept]) and torch.equal(ret[:kept], ret2[:kept])


@given(st.integers(1, 5), st.integers(1, 12), st.integers(0, 2**31 - 1), st.booleans())
def test_vmap_equals_loop_for_gae(n, t, seed, per_step):
    g = torch.Generator().manual_seed(seed)
    r, v = torch.randn(n, t, generator=g, dtype=F64), torch.randn(n, t, generator=g, dtype=F64)
    d, b = torch.rand(n, t, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64)
    lam = torch.rand(n, t, generator=g, dtype=F64) if per_step else 0.9
    in_dims = (0, 0, 0, 0, 0 if per_step else None)
    adv, ret = torch.func.vmap(gae, in_dims=in_dims)(r, d, v, b, lam)
    for i in range(n):
        a_i, g_i = gae(r[i], d[i], v[i], b[i], lam[i] if per_step else lam)
        assert torch.equal(adv[i], a_i) and torch.equal(ret[i], g_i)


@given(st.integers(1, 5), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_vmap_equals_loop_for_episode_arrays(n, e, seed):
    g = torch.Generator().manual_seed(seed)
    r, v = torch.randn(n, e, generator=g, dtype=F64), torch.randn(n, e, generator=g, dtype=F64)
    kept = torch.randint(1, e + 1, (n,), generator=g)
    valid = (torch.arange(e)[None] < kept[:, None]).to(F64)
    terminal = torch.zeros(n, e, dtype=F64)
    terminal[:, -1] = (kept == e).to(F64)
    batched = torch.func.vmap(episode_arrays, in_dims=(0, 0, 0, 0, None, None))(r, v, valid, terminal, 0.99, 0.9)
    for i in range(n):
        single = episode_arrays(r[i], v[i], valid[i], terminal[i], 0.99, 0.9)
        for got, want in zip(batched, single, strict=True):
            assert torch.equal(got[i], want)


@given(st.integers(2, 40), st.integers(0, 2**31 - 1), st.floats(0.1, 100.0), st.floats(-50.0, 50.0))
@example(size=2, seed=73497928, scale=0.125, shift=0.0)  # thorough's find: σ ≈ 0.008, so the 1e-8 shows at 1e-6
def test_normalised_advantages_are_standard_on_valid_entries(size, seed, scale, shift):
    g = torch.Generator().manual_seed(seed)
    adv = shift + scale * torch.randn(size, generator=g, dtype=F64)
    valid = torch.rand(size, generator=g, dtype=F64) < 0.7
    valid[:2] = True
    out = normalize_advantages(torch.where(valid, adv, torch.nan), valid)
    assert torch.equal(out[~valid], torch.zeros_like(out[~valid]))
    kept = out[valid]
    assert abs(kept.mean().item()) < 1e-9
    sigma = adv[valid].std().item()  # Bessel, as the spec's max(Σv − 1, 1)
    assert abs(kept.std().item() - sigma / (sigma + 1e-8)) < 1e-12  # Â = (A − μ)/(σ + 1e-8): std σ/(σ + 1e-8)


@given(st.integers(3, 40), st.integers(0, 2**31 - 1), st.floats(0.0, 2.0))
def test_explained_variance_matches_its_definition(size, seed, noise):
    g = torch.Generator().manual_seed(seed)
    returns = torch.randn(size, generator=g, dtype=F64)
    values = returns + noise * torch.randn(size, generator=g, dtype=F64)
    valid = torch.ones(size, dtype=F64)
    valid[-1] = 0.0
    values_padded = torch.where(valid > 0, values, torch.nan)
    got = explained_variance(values_padded, returns, valid).item()
    r, v = returns[:-1], values[:-1]
    want = 1.0 - (r - v).var().item() / r.var().item() if r.var().item() > 1e-8 else 0.0
    assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    assert explained_variance(returns, returns, valid).item() == (1.0 if r.var().item() > 1e-8 else 0.0)
