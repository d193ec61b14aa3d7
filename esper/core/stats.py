r"""Statistics for `esper-run compare` (docs/runtime.md §9): per-group summaries and Welch's t-test; the
Pearson correlation a PPO run reports between its episodes' return and their outcomes (docs/rl.md §8).

Index convention: a sample x_1 … x_n is one value per run (one seed of one group); nothing here
looks at epochs. For a sample of size n:

    mean  m = Σ x_i / n
    std   s = sqrt(Σ (x_i − m)² / (n − 1))            (sample std; defined as 0.0 when n = 1)

Welch's t-test of sample a (n_a, m_a, s_a) against sample b (n_b, m_b, s_b), unequal variances:

    v_a = s_a² / n_a,   v_b = s_b² / n_b,   se = sqrt(v_a + v_b)
    t   = (m_a − m_b) / se
    df  = (v_a + v_b)² / (v_a² / (n_a − 1) + v_b² / (n_b − 1))          (Welch–Satterthwaite)
    p   = 2 · P(T_df > |t|)                                             (two-sided)
    CI  = (m_a − m_b) ± t_{1−α/2, df} · se                              (level 1 − α: 95 % at α = 0.05)

t and p come from `scipy.stats.ttest_ind_from_stats(equal_var=False)` (the test from the means and sample
stds: the raw-sample `ttest_ind` warns of precision loss on a constant sample, where v = 0 is exact);
df and the CI are computed here from the formulas above. A difference is called "real" only when p < α,
else "within noise" (docs/runtime.md §9).

Degenerate cases (no exception, so a table can still be printed):
- n < 2 in either sample: no variance estimate exists → t, df, p, CI are NaN, real = False,
  verdict "n < 2".
- both samples have zero variance and equal means: nothing differs → t = 0, p = 1, CI = (0, 0),
  df = NaN (0/0), verdict "within noise".
- both samples have zero variance and different means: the difference is exact → t = ±inf, p = 0,
  CI = (diff, diff), df = NaN, verdict "real".

Pearson's r of paired samples (x_i, y_i), i = 1 … n (`pearson`):

    r = Σ (x_i − x̄)(y_i − ȳ) / sqrt(Σ (x_i − x̄)² · Σ (y_i − ȳ)²)         in [−1, 1]

r is NaN (undefined, no exception) when n < 3 (two points always lie on a line: r = ±1 says nothing)
or when either series is constant (a zero denominator).

Inputs must be finite: NaN (a diverged run) or ±inf is an error, never silently dropped.

Pure: numpy and scipy.stats only; no I/O.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
from scipy import stats as sps

DEFAULT_ALPHA = 0.05
VERDICT_REAL, VERDICT_NOISE, VERDICT_SMALL = "real", "within noise", "n < 2"


@attrs.frozen(kw_only=True)
class Summary:
    """Mean ± sample std (n − 1) with n and the range of one quantity over runs."""

    n: int
    mean: float
    std: float
    min: float
    max: float


def _finite_array(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a flat sequence of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what}: empty sample")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: non-finite value in {arr.tolist()} (a diverged run must not be averaged)")
    return arr


def summarize(values: Sequence[float]) -> Summary:
    """Summary of a non-empty sample of finite numbers; std is the sample std (0.0 for n = 1)."""
    arr = _finite_array(values, "summarize")
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
    return Summary(n=int(arr.size), mean=float(np.mean(arr)), std=std, min=float(np.min(arr)),
                   max=float(np.max(arr)))


@attrs.frozen(kw_only=True)
class WelchResult:
    """Welch's t-test of a against b; diff and the CI are a − b. `alpha` is the level the verdict used."""

    t: float
    df: float
    p: float
    diff: float
    ci_low: float
    ci_high: float
    real: bool
    verdict: str
    alpha: float = DEFAULT_ALPHA


def welch(a: Sequence[float], b: Sequence[float], alpha: float = DEFAULT_ALPHA) -> WelchResult:
    """Two-sided Welch's t-test of sample a against sample b (module docstring: formulas, edge cases)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"welch: alpha must be in (0, 1), got {alpha}")
    xa, xb = _finite_array(a, "welch sample a"), _finite_array(b, "welch sample b")
    diff = float(np.mean(xa) - np.mean(xb))
    nan = math.nan
    if xa.size < 2 or xb.size < 2:
        return WelchResult(t=nan, df=nan, p=nan, diff=diff, ci_low=nan, ci_high=nan, real=False,
                           verdict=VERDICT_SMALL, alpha=alpha)
    va, vb = np.var(xa, ddof=1) / xa.size, np.var(xb, ddof=1) / xb.size
    if va == 0.0 and vb == 0.0:
        return _zero_variance(diff, alpha)
    res = sps.ttest_ind_from_stats(np.mean(xa), np.std(xa, ddof=1), xa.size, np.mean(xb), np.std(xb, ddof=1),
                                   xb.size, equal_var=False)
    df = float((va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1)))
    half = float(sps.t.ppf(1.0 - alpha / 2.0, df) * math.sqrt(va + vb))
    p = float(res.pvalue)
    real = p < alpha
    return WelchResult(t=float(res.statistic), df=df, p=p, diff=diff, ci_low=diff - half, ci_high=diff + half,
                       real=real, verdict=VERDICT_REAL if real else VERDICT_NOISE, alpha=alpha)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r of the pairs (x_i, y_i) (module docstring: formula; NaN for n < 3 or a constant series).
    Raises ValueError when the lengths differ or a value is not finite."""
    ax, ay = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if ax.ndim != 1 or ax.shape != ay.shape:
        raise ValueError(f"pearson: expected two flat sequences of one length, got shapes {ax.shape}, {ay.shape}")
    if not (np.all(np.isfinite(ax)) and np.all(np.isfinite(ay))):
        raise ValueError("pearson: non-finite value (a diverged episode must be left out by the caller)")
    if ax.size < 3 or np.ptp(ax) == 0.0 or np.ptp(ay) == 0.0:
        return math.nan
    return float(np.corrcoef(ax, ay)[0, 1])  # numpy clips r to [−1, 1] against rounding


def pearson_of_finite(x: Sequence[float], y: Sequence[float]) -> tuple[float, int]:
    """(r, n): Pearson's r over the pairs (x_i, y_i) whose both values are finite, and the number n of those
    pairs; for a training log, where one diverged episode's NaN must not void the statistic of the others."""
    kept = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    return pearson([a for a, _ in kept], [b for _, b in kept]), len(kept)


def _zero_variance(diff: float, alpha: float) -> WelchResult:
    # se = 0: the t statistic is 0/0 or ±x/0, and scipy returns NaN for the former; decide it here.
    if diff == 0.0:
        return WelchResult(t=0.0, df=math.nan, p=1.0, diff=0.0, ci_low=0.0, ci_high=0.0, real=False,
                           verdict=VERDICT_NOISE, alpha=alpha)
    return WelchResult(t=math.copysign(math.inf, diff), df=math.nan, p=0.0, diff=diff, ci_low=diff, ci_high=diff,
                       real=True, verdict=VERDICT_REAL, alpha=alpha)


@attrs.frozen(kw_only=True)
class RunRecord:
    """One finished run as `compare` sees it. Accuracies are fractions in [0, 1]."""

    group: str  # static | static-param | static-flop | heuristic | ppo | ...
    seed: int
    final_val_acc: float
    best_val_acc: float
    params: int  # total at the end (host + seeds)
    train_flops: int
    wall_s: float
    fossilized: int
    culled: int
    run_dir: str = ""

    @classmethod
    def from_summary(cls, group: str, summary: Mapping[str, Any], train_flops: int | None = None, *,
                     run_dir: str = "") -> "RunRecord":
        """Build from a run's summary.json dict (`codec.encode` of a `RunSummary`).

        FLOPs: the explicit `train_flops` argument wins, else the summary's `train_flops` key; with
        neither, ValueError (FLOPs are counted, never guessed). A run without a final or best
        validation accuracy (it ended before its first validation) is a ValueError too.
        """
        flops = train_flops if train_flops is not None else summary.get("train_flops")
        if flops is None:
            raise ValueError(f"run {summary.get('run_id')!r}: no train_flops (not in summary.json, none given)")
        final, best = summary.get("final_val_acc"), summary.get("best_val_acc")
        if final is None or best is None:
            status = summary.get("status")
            raise ValueError(f"run {summary.get('run_id')!r} (status {status!r}): no validation accuracy")
        params = summary.get("total_params", summary["host_params"] + summary["seed_params"])
        fates = [s["fate"] for s in summary.get("seeds", ())]
        return cls(group=group, seed=int(summary["seed"]), final_val_acc=float(final), best_val_acc=float(best),
                   params=int(params), train_flops=int(flops), wall_s=float(summary["wall_s"]),
                   fossilized=fates.count("fossilized"), culled=fates.count("culled"), run_dir=run_dir)


@attrs.frozen(kw_only=True)
class GroupStats:
    """Every reported quantity of one group; `vs_static` tests final val acc against the reference group."""

    group: str
    n: int
    final: Summary
    best: Summary
    params: Summary
    flops: Summary
    wall: Summary
    fossilized: Summary
    culled: Summary
    vs_static: WelchResult | None  # None for the reference group itself, or when it is absent


def compare_groups(records: Sequence[RunRecord], reference: str = "static",
                   alpha: float = DEFAULT_ALPHA) -> list[GroupStats]:
    """One `GroupStats` per group, in order of first appearance.

    A (group, seed) pair may appear once: a duplicate would silently inflate n.
    """
    groups: dict[str, list[RunRecord]] = {}
    seen: set[tuple[str, int]] = set()
    for rec in records:
        if (rec.group, rec.seed) in seen:
            raise ValueError(f"compare_groups: duplicate run for group {rec.group!r}, seed {rec.seed}")
        seen.add((rec.group, rec.seed))
        groups.setdefault(rec.group, []).append(rec)
    ref = [r.final_val_acc for r in groups.get(reference, [])]
    return [_group_stats(name, recs, ref, name == reference, alpha) for name, recs in groups.items()]


def _group_stats(name: str, recs: list[RunRecord], ref: list[float], is_ref: bool, alpha: float) -> GroupStats:
    def col(field: str) -> Summary:
        return summarize([getattr(r, field) for r in recs])

    finals = [r.final_val_acc for r in recs]
    vs = welch(finals, ref, alpha) if ref and not is_ref else None
    return GroupStats(group=name, n=len(recs), final=col("final_val_acc"), best=col("best_val_acc"),
                      params=col("params"), flops=col("train_flops"), wall=col("wall_s"),
                      fossilized=col("fossilized"), culled=col("culled"), vs_static=vs)
