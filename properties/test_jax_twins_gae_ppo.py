"""docs/rl.md §10 item 7: torch equals the JAX twin after a DLPack round trip, for gae, episode_arrays, the advantage
statistics and ppo_loss (loss, every diagnostic and the gradients), in float64.

The twins run under `jax.jit` (as JAX would use them) and shapes come from a few fixed sizes, so each traced
program compiles once instead of once per drawn shape."""

import pytest

jax = pytest.importorskip("jax")  # installed in CI through the `jax` extra

import attrs  # noqa: E402
import torch  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from esper.core import gae as tgae  # noqa: E402
from esper.core import ppo as tppo  # noqa: E402
from esper.core.jax import gae as jgae  # noqa: E402
from esper.core.jax import ppo as jppo  # noqa: E402

jax.config.update("jax_enable_x64", True)
F64 = torch.float64
seeds = st.integers(0, 2**31 - 1)
B, T = 2, 5

jit_gae = jax.jit(jgae.gae)
jit_episode = jax.jit(jgae.episode_arrays, static_argnums=(4, 5))
jit_stats = jax.jit(lambda v, adv, valid: (jgae.normalize_advantages(adv, valid),
                                           jgae.explained_variance(v, adv, valid)))
jit_ppo = jax.jit(jppo.ppo_loss, static_argnums=4)  # PPOCoefs is frozen, hence hashable
jit_ppo_grad = jax.jit(jax.grad(lambda lp, en, v, b, c: jppo.ppo_loss(lp, en, v, b, c)[0], argnums=(0, 1, 2)),
                       static_argnums=4)


def to_jax(t: torch.Tensor):
    return jax.dlpack.from_dlpack(t.contiguous())


def to_torch(a) -> torch.Tensor:
    return torch.from_dlpack(a)


def _close(jax_out, torch_out, tol: float = 1e-12) -> None:
    got = to_torch(jax_out)
    assert got.dtype == torch_out.dtype
    torch.testing.assert_close(got, torch_out, rtol=tol, atol=tol)


@given(st.sampled_from([1, 7, 40]), seeds, st.booleans())
def test_gae_twin(t, seed, per_step):
    g = torch.Generator().manual_seed(seed)
    r, v = torch.randn(t, generator=g, dtype=F64), torch.randn(t, generator=g, dtype=F64)
    d, b = torch.rand(t, generator=g, dtype=F64), torch.randn((), generator=g, dtype=F64)
    lam = torch.rand(t, generator=g, dtype=F64) if per_step else 0.97
    want = tgae.gae(r, d, v, b, lam)
    got = jit_gae(to_jax(r), to_jax(d), to_jax(v), to_jax(b), to_jax(lam) if per_step else lam)
    for j, w in zip(got, want, strict=True):
        _close(j, w)


@given(st.sampled_from([1, 6]), seeds)
def test_episode_arrays_and_statistics_twins(e, seed):
    n = 3
    g = torch.Generator().manual_seed(seed)
    r, v = torch.randn(n, e, generator=g, dtype=F64), torch.randn(n, e, generator=g, dtype=F64)
    kept = torch.randint(1, e + 1, (n,), generator=g)
    valid = (torch.arange(e)[None] < kept[:, None]).to(F64)
    terminal = torch.zeros(n, e, dtype=F64)
    terminal[:, -1] = (kept == e).to(F64)
    for i in range(n):
        want = tgae.episode_arrays(r[i], v[i], valid[i], terminal[i], 0.995, 0.97)
        got = jit_episode(to_jax(r[i]), to_jax(v[i]), to_jax(valid[i]), to_jax(terminal[i]), 0.995, 0.97)
        for j, w in zip(got, want, strict=True):
            _close(j, w)
    adv = torch.randn(n, e, generator=g, dtype=F64)
    got_norm, got_ev = jit_stats(to_jax(v), to_jax(adv), to_jax(valid))
    _close(got_norm, tgae.normalize_advantages(adv, valid))
    _close(got_ev, tgae.explained_variance(v, adv, valid))


@st.composite
def ppo_cases(draw):
    b, t = B, T
    g = torch.Generator().manual_seed(draw(seeds))
    spread = draw(st.sampled_from([0.0, 0.1, 1.0]))
    relevance = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=F64)[
        torch.randint(0, 3, (b, t), generator=g)]
    valid = (torch.arange(t)[None] < torch.randint(1, t + 1, (b, 1), generator=g)).to(F64)
    logp_old = -2 * torch.rand(b, t, 4, generator=g, dtype=F64)
    batch = tppo.PPOBatch(logp_old=logp_old, value_old=torch.randn(b, t, generator=g, dtype=F64),
                          relevance=relevance, valid=valid, advantages=torch.randn(b, t, generator=g, dtype=F64),
                          returns=torch.randn(b, t, generator=g, dtype=F64))
    logp = logp_old + spread * torch.randn(b, t, 4, generator=g, dtype=F64)
    value = batch.value_old + spread * torch.randn(b, t, generator=g, dtype=F64)
    ent = torch.rand(b, t, 4, generator=g, dtype=F64)
    coefs = tppo.PPOCoefs(clip_eps=0.2, value_clip_eps=0.2, value_coef=0.5,
                          entropy_coef=draw(st.sampled_from([0.0, 0.03])))
    return logp, ent, value, batch, coefs


@given(ppo_cases())
def test_ppo_loss_twin(case):
    logp, ent, value, batch, coefs = case
    want_loss, want_diag = tppo.ppo_loss(*case)
    jbatch = tppo.PPOBatch(**{f.name: to_jax(getattr(batch, f.name)) for f in attrs.fields(tppo.PPOBatch)})
    jargs = (to_jax(logp), to_jax(ent), to_jax(value))
    got_loss, got_diag = jit_ppo(*jargs, jbatch, coefs)
    _close(got_loss, want_loss)
    names = [f.name for f in attrs.fields(tppo.PPODiagnostics)]
    assert sorted(got_diag) == sorted(names)
    for name in names:
        _close(got_diag[name], getattr(want_diag, name), 1e-10)

    t_args = tuple(x.clone().requires_grad_() for x in (logp, ent, value))
    t_grads = torch.autograd.grad(tppo.ppo_loss(*t_args, batch, coefs)[0], t_args)
    j_grads = jit_ppo_grad(*jargs, jbatch, coefs)
    for j, w in zip(j_grads, t_grads, strict=True):
        _close(j, w)
