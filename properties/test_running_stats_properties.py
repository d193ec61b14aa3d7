"""Running normaliser (docs/rl.md §2, §10 items 5, 7, 14): merge over split batches equals the two-pass
statistics of the concatenation and merging all at once; masked rows are ignored; no valid rows leave the
stats unchanged; vmap == loop; the same `merge` and `normalize` under jax.jit and jax.vmap equal them on torch
after a DLPack round trip (one source for both frameworks)."""

from functools import partial

import pytest
import torch
import torch.utils._pytree as torch_pytree
from hypothesis import given
from hypothesis import strategies as st
from profiles import scaled

from esper.core.pytree import tree_index, tree_stack
from esper.core.running_stats import RunningStats, merge, normalize

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


@scaled(0.625)
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


def _jax():
    """jax in float64, or skip (the `jax` extra; CI installs it). Only the jax properties need it."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _to_jax(tree: object) -> object:
    jax = _jax()
    return torch_pytree.tree_map(jax.dlpack.from_dlpack, tree)


def _to_torch(tree: object) -> object:
    return _jax().tree_util.tree_map(torch.from_dlpack, tree)


# Fixed shapes for jax: each jitted program compiles once per shape, and the equations do not depend on the
# shape (which the torch properties above vary).
JAX_ENVS, JAX_DIM, JAX_ROWS = 2, 3, 6
_JITTED: dict[str, object] = {}


def _jit(name: str, fn: object) -> object:
    if name not in _JITTED:
        jax = _jax()
        _JITTED[name] = jax.jit(jax.vmap(fn))
    return _JITTED[name]


@given(data=st.data())
def test_merge_on_jax_equals_merge_on_torch(data: st.DataObject) -> None:
    prior = [data.draw(st.one_of(stats_values(JAX_DIM), st.just(RunningStats.initial(JAX_DIM, dtype=F64))))
             for _ in range(JAX_ENVS)]
    rows = [data.draw(batches(JAX_DIM, n_rows=JAX_ROWS)) for _ in range(JAX_ENVS)]
    stacked, (x, valid) = tree_stack(prior), tree_stack(rows)
    got = _to_torch(_jit("merge", merge)(*_to_jax((stacked, x, valid))))
    assert isinstance(got, RunningStats)
    for i in range(JAX_ENVS):
        close(tree_index(got, i), merge(prior[i], x[i], valid[i]), rtol=1e-12, atol=1e-9)


@given(data=st.data(), floor=st.sampled_from([1e-3, 0.1, 1.0]), clip=st.sampled_from([0.5, 5.0]))
def test_normalize_on_jax_equals_normalize_on_torch(data: st.DataObject, floor: float, clip: float) -> None:
    stats = data.draw(stats_values(JAX_DIM))
    x = torch.tensor(data.draw(st.lists(VALUES, min_size=JAX_DIM, max_size=JAX_DIM)), dtype=F64)
    binary = torch.tensor(data.draw(st.lists(st.booleans(), min_size=JAX_DIM, max_size=JAX_DIM)), dtype=torch.bool)
    want = normalize(stats, x, binary, floor, clip)
    fn = partial(normalize, std_floor=floor, clip=clip)
    got = _to_torch(_jit(f"normalize{floor},{clip}", fn)(*_to_jax(tree_stack([(stats, x, binary)]))))[0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(got[binary], x[binary])
