"""`esper.core.stats`: summaries, Welch's t-test and group comparison against hand-computed answers."""

import math
import warnings

import pytest
from scipy import stats as sps

from esper.core.stats import RunRecord, compare_groups, pearson, pearson_of_finite, summarize, welch

# ---------------------------------------------------------------- summarize


def test_summarize_known_values() -> None:
    s = summarize([1, 2, 3, 4])
    assert s.n == 4
    assert s.mean == pytest.approx(2.5)
    assert s.std == pytest.approx(math.sqrt(5 / 3))  # Σ(x−2.5)² = 5, / (n − 1) = 3
    assert (s.min, s.max) == (1.0, 4.0)


def test_summarize_single_value_has_zero_std() -> None:
    s = summarize([0.7])
    assert (s.n, s.mean, s.std, s.min, s.max) == (1, 0.7, 0.0, 0.7, 0.7)


@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [math.inf, 1.0]])
def test_summarize_rejects_empty_and_non_finite(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        summarize(bad)


# ---------------------------------------------------------------- welch

A = [0.81, 0.83, 0.80, 0.84]
B = [0.78, 0.79, 0.75]


def _hand_welch(a: list[float], b: list[float]) -> tuple[float, float]:
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return t, df


def test_welch_matches_closed_form() -> None:
    t, df = _hand_welch(A, B)
    r = welch(A, B)
    assert r.t == pytest.approx(t, rel=1e-12)
    assert r.df == pytest.approx(df, rel=1e-12)
    assert r.p == pytest.approx(2 * sps.t.sf(abs(t), df), rel=1e-9)
    assert r.diff == pytest.approx(sum(A) / 4 - sum(B) / 3)
    se = (sum(A) / 4 - sum(B) / 3) / t
    half = sps.t.ppf(0.975, df) * se
    assert (r.ci_low, r.ci_high) == (pytest.approx(r.diff - half), pytest.approx(r.diff + half))


def test_welch_numbers_by_hand() -> None:
    # a = [1, 2, 3, 4]: m 2.5, s² 5/3;  b = [2, 5, 7]: m 14/3, s² 19/3.
    # v_a = 5/12, v_b = 19/9, se² = 91/36;  t = (2.5 − 14/3) / sqrt(91/36) = −13/sqrt(91)
    # df = (91/36)² / ((5/12)²/3 + (19/9)²/2) = 8281/1296 / (25/432 + 361/162) = 8281/2963
    r = welch([1, 2, 3, 4], [2, 5, 7])
    assert r.t == pytest.approx(-13 / math.sqrt(91))
    assert r.df == pytest.approx(8281 / 2963)
    assert r.diff == pytest.approx(2.5 - 14 / 3)
    assert r.verdict == "within noise" and not r.real


def test_welch_is_antisymmetric() -> None:
    ab, ba = welch(A, B), welch(B, A)
    assert ab.t == pytest.approx(-ba.t) and ab.p == pytest.approx(ba.p) and ab.df == pytest.approx(ba.df)
    assert ab.ci_low == pytest.approx(-ba.ci_high)


def test_separated_samples_are_real() -> None:
    r = welch([0.90, 0.91, 0.92], [0.70, 0.71, 0.72])
    assert r.real and r.verdict == "real" and r.p < 0.001
    assert r.ci_low > 0


def test_overlapping_samples_are_within_noise() -> None:
    r = welch([0.80, 0.85, 0.75], [0.79, 0.84, 0.77])
    assert not r.real and r.verdict == "within noise" and r.p > 0.5
    assert r.ci_low < 0 < r.ci_high


def test_alpha_sets_the_verdict_and_ci_level() -> None:
    loose, strict = welch(A, B, alpha=0.5), welch(A, B, alpha=1e-6)
    assert loose.real and not strict.real
    assert loose.p == strict.p
    assert (strict.ci_high - strict.ci_low) > (loose.ci_high - loose.ci_low)


def test_zero_variance_equal_means_is_within_noise() -> None:
    r = welch([0.5, 0.5, 0.5], [0.5, 0.5])
    assert r.p == 1.0 and r.t == 0.0 and r.verdict == "within noise" and not r.real
    assert (r.ci_low, r.ci_high) == (0.0, 0.0)


def test_zero_variance_different_means_is_real() -> None:
    r = welch([0.6, 0.6], [0.5, 0.5, 0.5])
    assert r.p == 0.0 and r.t == math.inf and r.real
    assert r.ci_low == r.ci_high == pytest.approx(0.1)


def test_one_zero_variance_sample_uses_the_other() -> None:
    t, df = _hand_welch([0.5, 0.5, 0.5], [0.4, 0.5, 0.6])
    r = welch([0.5, 0.5, 0.5], [0.4, 0.5, 0.6])
    assert r.t == pytest.approx(t, abs=1e-9) and r.df == pytest.approx(df) and df == pytest.approx(2.0)


def test_a_constant_sample_warns_nothing_and_matches_scipy() -> None:
    # scipy's raw-sample ttest_ind warns of precision loss here; the core passes it summary stats.
    a, b = [0.8123, 0.8123, 0.8123], [0.40, 0.41, 0.43]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = welch(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = sps.ttest_ind(a, b, equal_var=False)
    assert r.t == pytest.approx(reference.statistic, rel=1e-12)
    assert r.p == pytest.approx(reference.pvalue, rel=1e-12)


@pytest.mark.parametrize(("a", "b"), [([0.5], [0.4, 0.6]), ([0.4, 0.6], [0.5]), ([0.5], [0.5])])
def test_fewer_than_two_runs_gives_nan_not_an_error(a: list[float], b: list[float]) -> None:
    r = welch(a, b)
    assert math.isnan(r.p) and math.isnan(r.t) and math.isnan(r.df) and math.isnan(r.ci_low)
    assert r.verdict == "n < 2" and not r.real
    assert r.diff == pytest.approx(sum(a) / len(a) - sum(b) / len(b))


def test_welch_rejects_nan_and_empty() -> None:
    with pytest.raises(ValueError):
        welch([0.5, math.nan], [0.5, 0.6])
    with pytest.raises(ValueError):
        welch([], [0.5, 0.6])


# ---------------------------------------------------------------- records and groups


def rec(group: str, seed: int, final: float, **kw: float) -> RunRecord:
    base = dict(best_val_acc=final + 0.01, params=1000, train_flops=10**12, wall_s=10.0, fossilized=0, culled=0)
    return RunRecord(group=group, seed=seed, final_val_acc=final, **{**base, **kw})


RECORDS = [
    rec("static", 0, 0.70, params=1000, wall_s=9.0),
    rec("heuristic", 0, 0.80, params=1200, fossilized=1, culled=2, train_flops=2 * 10**12),
    rec("static-param", 0, 0.71, params=1210),
    rec("static", 1, 0.72, params=1000, wall_s=10.0),
    rec("heuristic", 1, 0.82, params=1300, fossilized=2, culled=0, train_flops=3 * 10**12),
    rec("static-param", 1, 0.69, params=1210),
    rec("static", 2, 0.74, params=1000, wall_s=11.0),
    rec("heuristic", 2, 0.84, params=1100, fossilized=0, culled=1, train_flops=4 * 10**12),
    rec("static-param", 2, 0.75, params=1210),
]


def test_compare_groups_known_means_and_order() -> None:
    out = compare_groups(RECORDS)
    assert [g.group for g in out] == ["static", "heuristic", "static-param"]
    static, heur, param = out
    assert static.n == heur.n == param.n == 3
    assert static.final.mean == pytest.approx(0.72) and static.final.std == pytest.approx(0.02)
    assert heur.final.mean == pytest.approx(0.82) and heur.best.mean == pytest.approx(0.83)
    assert param.final.mean == pytest.approx(0.7166666666666667)
    assert heur.params.mean == pytest.approx(1200) and heur.params.std == pytest.approx(100)
    assert heur.flops.mean == pytest.approx(3e12) and heur.flops.min == 2e12
    assert heur.fossilized.mean == pytest.approx(1.0) and heur.culled.mean == pytest.approx(1.0)
    assert static.wall.mean == pytest.approx(10.0) and static.wall.std == pytest.approx(1.0)


def test_compare_groups_tests_each_group_against_static() -> None:
    static, heur, param = compare_groups(RECORDS)
    assert static.vs_static is None
    # heuristic = static + 0.10 exactly, same spread: t = 0.10 / sqrt(2·0.02²/3), df = 4.
    assert heur.vs_static is not None and param.vs_static is not None
    assert heur.vs_static.diff == pytest.approx(0.10)
    assert heur.vs_static.t == pytest.approx(0.10 / math.sqrt(2 * 0.0004 / 3))
    assert heur.vs_static.df == pytest.approx(4.0)
    assert heur.vs_static.verdict == "real"
    assert param.vs_static.verdict == "within noise"


def test_compare_groups_without_reference_and_duplicates() -> None:
    out = compare_groups([r for r in RECORDS if r.group != "static"])
    assert all(g.vs_static is None for g in out)
    with pytest.raises(ValueError, match="duplicate"):
        compare_groups([*RECORDS, rec("static", 0, 0.5)])


SUMMARY = {
    "run_id": "synth-images-heuristic-s2-x", "status": "ok", "task": "synth-images", "controller": "heuristic",
    "seed": 2, "epochs": 2, "final_val_acc": 0.25, "best_val_acc": 0.3, "best_epoch": 1, "host_params": 6418,
    "seed_params": 100, "wall_s": 5.5, "data_source": {}, "dropped": {}, "final_val_loss": 2.3, "total_params": 6518,
    "seeds": [{"fate": "fossilized"}, {"fate": "culled"}, {"fate": "culled"}, {"fate": "live"}],
}


def test_record_from_summary() -> None:
    r = RunRecord.from_summary("heuristic", SUMMARY, train_flops=123, run_dir="runs/x")
    assert (r.group, r.seed, r.final_val_acc, r.best_val_acc) == ("heuristic", 2, 0.25, 0.3)
    assert (r.params, r.train_flops, r.wall_s, r.fossilized, r.culled, r.run_dir) == (6518, 123, 5.5, 1, 2, "runs/x")


def test_record_from_summary_flops_source() -> None:
    assert RunRecord.from_summary("g", {**SUMMARY, "train_flops": 77}).train_flops == 77
    assert RunRecord.from_summary("g", {**SUMMARY, "train_flops": 77}, train_flops=5).train_flops == 5
    with pytest.raises(ValueError, match="train_flops"):
        RunRecord.from_summary("g", SUMMARY)
    with pytest.raises(ValueError, match="validation accuracy"):
        RunRecord.from_summary("g", {**SUMMARY, "final_val_acc": None}, train_flops=1)


# ---------------------------------------------------------------- pearson


def test_pearson_matches_the_hand_computed_value_and_scipy() -> None:
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 9.0]
    # x̄ = 2.5, ȳ = 5: Σ dx·dy = 4.5 + 0.5 + 0 + 6 = 11, Σ dx² = 5, Σ dy² = 26
    assert pearson(x, y) == pytest.approx(11 / math.sqrt(5 * 26), rel=1e-12)
    assert pearson(x, y) == pytest.approx(sps.pearsonr(x, y).statistic, rel=1e-12)


def test_pearson_of_exact_lines_is_plus_or_minus_one() -> None:
    x = [0.1, 0.4, 0.2, 0.9]
    assert pearson(x, [3 * v + 1 for v in x]) == pytest.approx(1.0)
    assert pearson(x, [-2 * v for v in x]) == pytest.approx(-1.0)


@pytest.mark.parametrize(("x", "y"), [([], []), ([1.0], [2.0]), ([1.0, 2.0], [2.0, 1.0]),  # n < 3
                                      ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), ([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])])
def test_pearson_is_nan_for_fewer_than_three_points_or_a_constant_series(x: list[float], y: list[float]) -> None:
    assert math.isnan(pearson(x, y))


@pytest.mark.parametrize(("x", "y", "match"), [([1.0, 2.0, 3.0], [1.0, 2.0], "one length"),
                                               ([1.0, math.nan, 3.0], [1.0, 2.0, 3.0], "non-finite"),
                                               ([1.0, 2.0, 3.0], [1.0, math.inf, 3.0], "non-finite")])
def test_pearson_refuses_unpaired_or_non_finite_input(x: list[float], y: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pearson(x, y)


def test_pearson_of_finite_drops_each_pair_with_a_non_finite_value_and_counts_the_rest() -> None:
    x = [1.0, 2.0, math.nan, 3.0, 4.0, 5.0]
    y = [2.0, 4.1, 1.0, math.inf, 7.9, 10.2]
    r, n = pearson_of_finite(x, y)
    assert n == 4
    assert r == pytest.approx(pearson([1.0, 2.0, 4.0, 5.0], [2.0, 4.1, 7.9, 10.2]))
    assert math.isnan(pearson_of_finite([math.nan, 1.0], [0.0, 2.0])[0])
    assert pearson_of_finite([], []) == (pytest.approx(math.nan, nan_ok=True), 0)
