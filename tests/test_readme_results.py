"""docs/runtime.md §9: every results figure in the README comes from a committed compare.md (made by
`esper-run compare` from its committed run.sh), so a number typed by hand fails here."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _compare_rows() -> list[list[str]]:
    """Rows of the README's compare tables (those whose last column is the test against static)."""
    rows, in_table = [], False
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[-1] == "vs static":
            in_table = True
            continue
        if in_table and line.startswith("|") and not set(line) <= set("|- "):
            rows.append(cells)
        elif in_table and not line.startswith("|"):
            in_table = False
    return rows


def test_the_readme_has_a_compare_table():
    assert len(_compare_rows()) >= 4


def test_every_readme_results_figure_is_in_a_committed_compare_md():
    committed = "\n".join(p.read_text(encoding="utf-8") for p in ROOT.glob("results/*/compare/compare.md"))
    assert committed, "no committed results/<experiment>/compare/compare.md"
    for row in _compare_rows():
        for figure in re.findall(r"\d[\d,]*\.\d+ ± \d[\d,]*\.\d+|\d+\.\d+e\d+|p = \d\.\d+|[+-]\d+\.\d+", " ".join(row)):
            assert figure in committed, f"README figure {figure!r} ({row[0]}) is not in any committed compare.md"


def test_each_experiment_has_its_run_script():
    for compare in ROOT.glob("results/*/compare/compare.md"):
        assert (compare.parent.parent / "run.sh").exists(), f"{compare} has no run.sh beside it"
