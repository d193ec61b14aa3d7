"""The running-stats merge (docs/rl.md §2, §7.5) over leading batch dimensions and across dtypes: per-env counts
along the rows' axis only, and the arithmetic in the stats' dtype (`merge` casts the rows to it)."""

import torch

from esper.core.running_stats import RunningStats, merge

NAN = float("nan")


def _values(stats: RunningStats) -> tuple[list, list, list]:
    return stats.mean.tolist(), stats.var.tolist(), stats.count.tolist()


def test_batched_stats_count_each_envs_rows_on_their_own() -> None:
    """stats [E = 2, D = 1], rows [2, n, 1]: env 0 merges rows 1 and 3, env 1 only 5 (its NaN row is invalid);
    then env 0 merges 5 as well while env 1 has no valid row and keeps its stats."""
    empty = RunningStats(mean=torch.zeros(2, 1), var=torch.ones(2, 1), count=torch.zeros(2))
    first = merge(empty, torch.tensor([[[1.0], [3.0]], [[5.0], [NAN]]]), torch.tensor([[True, True], [True, False]]))
    assert _values(first) == ([[2.0], [5.0]], [[1.0], [0.0]], [2.0, 1.0])
    second = merge(first, torch.tensor([[[5.0]], [[7.0]]]), torch.tensor([[True], [False]]))
    mean, var, count = _values(second)
    assert (mean, count) == ([[3.0], [5.0]], [3.0, 1.0])
    assert var[1] == [0.0] and abs(var[0][0] - 8 / 3) < 1e-6  # population variance of 1, 3, 5


ROWS = torch.tensor([[0.1], [0.2], [0.7], [NAN]])  # float32; the last row is invalid
VALID = torch.tensor([True, True, True, False])


def test_float64_rows_into_float32_stats_are_merged_in_float32() -> None:
    got = merge(RunningStats.initial(1), ROWS.to(torch.float64), VALID)
    assert {got.mean.dtype, got.var.dtype, got.count.dtype} == {torch.float32}
    assert _values(got) == _values(merge(RunningStats.initial(1), ROWS, VALID))


def test_float32_rows_into_float64_stats_are_merged_in_float64() -> None:
    got = merge(RunningStats.initial(1, dtype=torch.float64), ROWS, VALID)
    rows = [float(x) for x in ROWS[:3, 0]]  # the float32 values, exactly, as float64
    mean = sum(rows) / 3
    want = torch.tensor([[mean], [sum((x - mean) ** 2 for x in rows) / 3]], dtype=torch.float64)
    torch.testing.assert_close(torch.stack([got.mean, got.var]), want, rtol=1e-13, atol=0)
    assert got.count.dtype == torch.float64 and got.count.item() == 3.0


def test_bfloat16_stats_stay_bfloat16() -> None:
    got = merge(RunningStats.initial(1, dtype=torch.bfloat16), ROWS, VALID)
    assert {got.mean.dtype, got.var.dtype, got.count.dtype} == {torch.bfloat16}
