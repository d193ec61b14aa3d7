"""Running normaliser (docs/rl.md §2, §10 items 5, 7, 14): merge over split batches equals the two-pass
statistics of the concatenation and merging all at once; masked rows are ignored; no valid rows leave the
stats unchanged; vmap == loop; torch == the JAX twin after a DLPack round trip (merge and normalize)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.core.running_stats import RunningStats, merge, normalize

jax = pytest.importorskip("jax")  # the `jax` extra; CI installs it
jax.config.update("jax_enable_x64", True)

from esper.core.jax import running_stats as jax_stats  # noqa: E402  (needs jax, imported after the skip)

VALUES = st.floats(-1e3, 1e3, allow_nan=False)
F64 = torch.float64


@st.composite
def batches(draw: st.DrawFn, dim: int, n_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows x[n, dim] (float64, n ≤ 12 unless given) and a validity mask; invalid rows hold NaN/Inf
    garbage half the time."""
    n = draw(st.integers(0, 12)) if n_rows is None else n_rows
    x = torch.tensor(draw(st.lists(st.lists(VALUES, min_size=dim, max_size=dim), min_size=n, max_size=n)),
                     dtype=F64).reshape(n, dim)
    valid = torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=torch.bool)
    if draw(st.booleans()):
        garbage = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=F64)
        x = torch.where(valid[:, None], x, garbage[torch.arange(n * dim) % 3].reshape(n, dim))
    return x, valid


@st.composite
def stats_values(draw: st.DrawFn, dim: int) -> RunningStats:
    return RunningStats(mean=torch.tensor(draw(st.lists(VALUES, min_size=dim, max_size=dim)), dtype=F64),
                        var=torch.tensor(draw(st.lists(st.floats(0, 1e4), min_size=dim, max_size=dim)), dtype=F64),
                        count=torch.tensor(float(draw(st.integers(0, 500))), dtype=F64))


def close(a: RunningStats, b: RunningStats, rtol: float = 1e-9, atol: float = 1e-7) -> None:
    for name in ("mean", "var", "count"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol)


DIMS = st.integers(1, 5)


@given(data=st.data(), dim=DIMS, n_chunks=st.integers(1, 4))
def test_split_merges_equal_two_pass_statistics_and_one_merge(data: st.DataObject, dim: int, n_chunks: int) -> None:
    chunks = [data.draw(batches(dim)) for _ in range(n_chunks)]
    x = torch.cat([c[0] for c in chunks])
    valid = torch.cat([c[1] for c in chunks])
    stats = RunningStats.initial(dim, dtype=F64)
    for xs, vs in chunks:
        stats = merge(stats, xs, vs)
    close(stats, merge(RunningStats.initial(dim, dtype=F64), x, valid))
    kept = x[valid].numpy()
    if len(kept) == 0:  # no valid rows anywhere: still the identity stats
        close(stats, RunningStats.initial(dim, dtype=F64), rtol=0, atol=0)
        return
    two_pass = RunningStats(mean=torch.from_numpy(kept.mean(0)), var=torch.from_numpy(kept.var(0)),
                            count=torch.tensor(float(len(kept)), dtype=F64))
    close(stats, two_pass)


@given(data=st.data(), dim=DIMS)
def test_masked_rows_are_ignored(data: st.DataObject, dim: int) -> None:
    prior = data.draw(stats_values(dim))
    x, valid = data.draw(batches(dim))
    kept = x[valid]
    close(merge(prior, x, valid), merge(prior, kept, torch.ones(len(kept), dtype=torch.bool)))


@given(data=st.data(), dim=DIMS, n=st.integers(0, 6))
def test_no_valid_rows_leave_the_stats_unchanged(data: st.DataObject, dim: int, n: int) -> None:
    prior = data.draw(stats_values(dim))
    x = torch.full((n, dim), float("nan"), dtype=F64)
    close(merge(prior, x, torch.zeros(n, dtype=torch.bool)), prior, rtol=0, atol=0)


@given(data=st.data(), dim=DIMS)
def test_empty_stats_take_the_batch_statistics(data: st.DataObject, dim: int) -> None:
    x, valid = data.draw(batches(dim))
    prior = RunningStats(mean=torch.full((dim,), 7.0, dtype=F64), var=torch.full((dim,), 3.0, dtype=F64),
                         count=torch.zeros((), dtype=F64))
    kept = x[valid]
    merged = merge(prior, x, valid)
    if len(kept):
        torch.testing.assert_close(merged.mean, kept.mean(0), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(merged.var, kept.var(0, unbiased=False), rtol=1e-9, atol=1e-7)
    assert merged.count.item() == len(kept)


@settings(max_examples=25)
@given(data=st.data(), dim=DIMS, n_envs=st.integers(1, 4))
def test_vmap_equals_loop(data: st.DataObject, dim: int, n_envs: int) -> None:
    rows = data.draw(st.integers(0, 8))
    stats = [data.draw(stats_values(dim)) for _ in range(n_envs)]
    pairs = [data.draw(batches(dim, n_rows=rows)) for _ in range(n_envs)]
    stacked = RunningStats(mean=torch.stack([s.mean for s in stats]), var=torch.stack([s.var for s in stats]),
                           count=torch.stack([s.count for s in stats]))
    x, valid = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    mapped = torch.func.vmap(merge)(stacked, x, valid)
    for i, (s, (xi, vi)) in enumerate(zip(stats, pairs, strict=True)):
        want = merge(s, xi, vi)
        close(RunningStats(mean=mapped.mean[i], var=mapped.var[i], count=mapped.count[i]), want, rtol=1e-12, atol=1e-9)


def _to_jax(t: torch.Tensor):
    return jax.dlpack.from_dlpack(t)


# Fixed shapes for the JAX twin: eager JAX compiles every primitive per shape, and the equations do not
# depend on the shape (which the torch properties above vary).
JAX_DIM, JAX_ROWS = 3, 6


@given(data=st.data())
def test_torch_merge_equals_the_jax_twin(data: st.DataObject) -> None:
    dim = JAX_DIM
    prior = data.draw(st.one_of(stats_values(dim), st.just(RunningStats.initial(dim, dtype=F64))))
    x, valid = data.draw(batches(dim, n_rows=JAX_ROWS))
    want = merge(prior, x, valid)
    jax_prior = RunningStats(mean=_to_jax(prior.mean), var=_to_jax(prior.var), count=_to_jax(prior.count))
    got = jax_stats.merge(jax_prior, _to_jax(x), _to_jax(valid))
    back = RunningStats(mean=torch.from_dlpack(got.mean), var=torch.from_dlpack(got.var),
                        count=torch.from_dlpack(got.count))
    close(back, want, rtol=1e-12, atol=1e-9)


@given(data=st.data(), floor=st.floats(1e-3, 1.0), clip=st.floats(0.5, 10.0))
def test_torch_normalize_equals_the_jax_twin(data: st.DataObject, floor: float, clip: float) -> None:
    dim = JAX_DIM
    stats = data.draw(stats_values(dim))
    x = torch.tensor(data.draw(st.lists(VALUES, min_size=dim, max_size=dim)), dtype=F64)
    binary = torch.tensor(data.draw(st.lists(st.booleans(), min_size=dim, max_size=dim)), dtype=torch.bool)
    want = normalize(stats, x, binary, floor, clip)
    jax_stats_value = RunningStats(mean=_to_jax(stats.mean), var=_to_jax(stats.var), count=_to_jax(stats.count))
    got = torch.from_dlpack(jax_stats.normalize(jax_stats_value, _to_jax(x), _to_jax(binary), floor, clip))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(got[binary], x[binary])
