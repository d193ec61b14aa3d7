"""docs/runtime.md §9: every figure of the README's tables is its named source's (a committed compare.md, or
the summary.json of the compare runs), row by row; every committed compare.md is what its runs'
summary.json files give; and an edit of any one digit of a table on a copy of the README is caught."""

import re
import shutil
import statistics
import subprocess

import pytest
from readme_evidence import ROOT, check_readme, group_summaries, readme_tables, recompute_compare_md

README = ROOT / "README.md"
COMPARES = sorted(ROOT.glob("results/*/compare/compare.md"))
ALL_COMPARES = sorted(ROOT.glob("results/**/compare/compare.md"))  # an ablation's own compare too


def _figure_tables() -> list:
    return [t for t in readme_tables(README.read_text(encoding="utf-8"))
            if any(re.search(r"\d", c) for row in t.rows for c in row)]


def test_the_readme_quotes_both_compares_and_the_growth_table():
    sources = [t.source for t in _figure_tables()]
    assert sources == ["results/<task>/compare/<controller>-s<seed>/summary.json",
                       "results/synth-images/compare/compare.md", "results/fashion-mnist/compare/compare.md",
                       "results/ppo-fashion-mnist/compare/compare.md"]
    assert [len(t.rows) for t in _figure_tables()] == [2, 4, 4, 5]


def test_every_readme_table_row_is_its_source_row():
    assert check_readme(README) == []


def test_each_experiment_has_its_run_script():
    assert COMPARES, "no committed results/<experiment>/compare/compare.md"
    for compare in COMPARES:
        assert (compare.parent.parent / "run.sh").exists(), f"{compare} has no run.sh beside it"


@pytest.mark.parametrize("compare", ALL_COMPARES, ids=lambda p: str(p.parent.parent.relative_to(ROOT / "results")))
def test_each_committed_compare_md_is_what_its_runs_give(compare):
    assert recompute_compare_md(compare.parent) == compare.read_text(encoding="utf-8")


def test_a_changed_summary_changes_the_recomputed_compare_md(tmp_path):
    """The recomputation reads the runs (not compare.md): one run's accuracy moved moves the table."""
    folder = shutil.copytree(COMPARES[0].parent, tmp_path / "compare", ignore=shutil.ignore_patterns("*.png", "*.csv"))
    summary = folder / "heuristic-s0" / "summary.json"
    text = summary.read_text(encoding="utf-8")
    summary.write_text(re.sub(r'"final_val_acc": 0\.(\d)', lambda m: f'"final_val_acc": 0.{(int(m[1]) + 1) % 10}',
                              text, count=1), encoding="utf-8")
    assert recompute_compare_md(folder) != (folder / "compare.md").read_text(encoding="utf-8")


def _table_digits(text: str) -> list[int]:
    """Offsets of every digit in the body rows of the README's tables that quote figures."""
    lines = text.splitlines(keepends=True)
    starts = [sum(len(ln) for ln in lines[:i]) for i in range(len(lines))]
    offsets = []
    for table in _figure_tables():
        for i in range(table.line + 1, table.line + 1 + len(table.rows)):  # 0-based: the rows after the ---
            offsets += [starts[i] + m.start() for m in re.finditer(r"\d", lines[i])]
    return offsets


def test_editing_any_digit_of_a_readme_table_is_caught(tmp_path):
    text = README.read_text(encoding="utf-8")
    offsets = _table_digits(text)
    body_rows = [ln for ln in text.splitlines() if ln.startswith("| ") and re.search(r"\d", ln)]
    assert len(offsets) == sum(len(re.findall(r"\d", ln)) for ln in body_rows) > 200  # integers, widths included
    copy = tmp_path / "README.md"
    missed = []
    for at in offsets:
        edited = text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:]
        copy.write_text(edited, encoding="utf-8")
        if not check_readme(copy):
            missed.append(edited.splitlines()[edited.count("\n", 0, at)])
    assert missed == []


def test_swapped_rows_a_missing_row_and_a_missing_source_are_caught(tmp_path):
    """Two groups' figures exchanged (each label kept), a row left out, a table with no source line."""
    text = README.read_text(encoding="utf-8")
    heuristic = next(ln for ln in text.splitlines() if ln.startswith("| heuristic | 3 | 75.95"))
    param = next(ln for ln in text.splitlines() if ln.startswith("| static, param-matched (width 11)"))
    (h_label, *h_figures), (p_label, *p_figures) = heuristic.split(" | "), param.split(" | ")
    swapped = (text.replace(heuristic, " | ".join([h_label, *p_figures]))
               .replace(param, " | ".join([p_label, *h_figures])))
    copy = tmp_path / "README.md"
    for edited in (swapped, text.replace(heuristic + "\n", ""),
                   text.replace("source: `results/fashion-mnist/compare/compare.md`", "")):
        assert edited != text
        copy.write_text(edited, encoding="utf-8")
        assert check_readme(copy)


def _mean(runs: tuple, key: str) -> float:
    return statistics.mean(r[key] for r in runs)


def test_the_fashion_mnist_prose_figures_are_its_runs():
    """The sentences under the Fashion-MNIST table quote its runs: the gap to the FLOP-matched host, the
    FLOP ratio of the param-matched one, and how every heuristic run grew (epochs, parameters)."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    heuristic, flop, param = (group_summaries(ROOT, "fashion-mnist", g) for g in ("heuristic", "static-flop",
                                                                                  "static-param"))
    gap = 100.0 * (_mean(heuristic, "final_val_acc") - _mean(flop, "final_val_acc"))
    assert f"wider static host by {gap:.1f} points" in text
    assert f"costs {_mean(param, 'train_flops') / _mean(heuristic, 'train_flops'):.1f}× the FLOPs" in text
    grown = {(s["slot"], s["blueprint"], s["fate"], s["end_epoch"], s["n_params"])
             for run in heuristic for s in run["seeds"] if s["slot"] != "early"}  # one growth for every run
    late, mid = sorted(grown)
    assert late[:3] == ("late", "conv_light", "fossilized") and mid[:3] == ("mid", "conv_heavy", "culled")
    late_epoch, late_params, mid_epoch = late[3], late[4], mid[3]
    assert (f"`late:conv_light` is fossilized at epoch {late_epoch} ({late_params:,} parameters), "
            f"`mid:conv_heavy` is culled in TRAINING at epoch {mid_epoch}") in text
    assert f"Every heuristic run above fossilizes `late:conv_light` at epoch {late_epoch};" in text


def test_the_plateau_rules_tie_is_the_compare_of_the_commit_the_readme_names():
    cited = re.search(r"ties static \((\d+\.\d+) % both: the compare committed in (\w+),", README.read_text())
    assert cited
    figure, commit = cited.groups()
    shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:results/fashion-mnist/compare/compare.md"],
                           capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip(f"commit {commit} is not in this checkout (a copy without its history)")
    for group in ("static", "heuristic"):
        assert f"| {group} | 3 | {figure} ± " in shown.stdout
