"""The README's tables against the committed artifacts they quote (docs/runtime.md §9).

Every README table with a figure in it names its source on the line under it:

    source: `results/<experiment>/compare/compare.md`
    source: `results/<task>/compare/<controller>-s<seed>/summary.json`   (row: task, column: controller)

and each README row is rebuilt from its own source row, cell by cell, so an edited digit (an integer, a
width, n, a verdict word included) or two swapped rows is a mismatch. `check_readme(path)` returns the
mismatches (empty: the README is true to its sources); the tests call it on the README and on edited
copies of it. `recompute_compare_md(folder)` rebuilds a committed compare.md from its runs' summary.json
files with the code that wrote it (esper.shell.compare_table), so compare.md cannot drift either.
"""

import functools
import json
import re
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from esper.core.stats import RunRecord, compare_groups
from esper.shell.compare import MATCH_TOLERANCE
from esper.shell.compare_table import HEADERS, controller_notes, markdown_table, match_note

ROOT = Path(__file__).resolve().parents[1]
SOURCE_LINE = re.compile(r"^source: `([^`]+)`")
RUN_DIR = re.compile(r"^(?P<group>.+)-s(?P<seed>\d+)$")
# The README's compare table: the columns it quotes of compare.md's, and how it names the matched groups.
README_COMPARE_HEADER = ["group", "n", "final val acc", "params", "train FLOPs", "vs static"]
MATCHED_LABEL = {"static-param": "static, param-matched (width {})", "static-flop": "static, FLOP-matched (width {})"}
GROWTH_PATTERN = "results/<task>/compare/<controller>-s<seed>/summary.json"


@attrs.frozen
class Table:
    line: int  # 1-based line of the header row in the README
    header: list[str]
    rows: list[list[str]]
    source: str | None  # the path named by the `source:` line under the table


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def readme_tables(text: str) -> list[Table]:
    """Every markdown table of the text (outside code fences), with the source named under it."""
    lines, tables, fenced, i = text.splitlines(), [], False, 0
    while i < len(lines):
        fenced ^= lines[i].startswith("```")
        if fenced or not lines[i].startswith("|"):
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
        after = next((ln for ln in lines[i:] if ln.strip()), "")
        match = SOURCE_LINE.match(after)
        tables.append(Table(start + 1, cells(lines[start]), [cells(ln) for ln in lines[start + 2:i]],
                            match.group(1) if match else None))
    return tables


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@functools.cache
def compare_md_rows(path: Path) -> tuple[dict[str, list[str]], dict[str, int]]:
    """compare.md's rows by group, and the widths of its matched groups (the notes under its table)."""
    text = path.read_text(encoding="utf-8")
    table = next(t for t in readme_tables(text) if t.header == list(HEADERS))
    widths = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+): host width (\d+) \(", text, re.M)}
    return {row[0]: row for row in table.rows}, widths


def readme_compare_row(row: list[str], widths: dict[str, int]) -> list[str]:
    """How the README quotes a compare.md row: the final accuracy without its range, params and FLOPs
    without a zero std, the test against static in words ("+3.22 points, p = 0.288, within noise")."""
    group, n, final, _best, params, flops, _wall, _foss, _culled, vs = row
    label = MATCHED_LABEL[group].format(widths[group]) if group in MATCHED_LABEL else group
    vs_words = vs.replace("Δ ", "").replace(" pp,", " points,")
    return [label, n, final.split(" (")[0] + " %", params.removesuffix(" ± 0"), flops.split(" ± ")[0], vs_words]


def _check_compare_table(table: Table, root: Path) -> Iterator[str]:
    path = root / table.source
    if not path.is_file():
        yield f"README table at line {table.line}: its source {table.source} does not exist"
        return
    if table.header != README_COMPARE_HEADER:
        yield f"README table at line {table.line}: header {table.header} is not {README_COMPARE_HEADER}"
    rows, widths = compare_md_rows(path)
    expected = {want[0]: want for want in (readme_compare_row(r, widths) for r in rows.values())}
    for row in table.rows:
        want = expected.pop(row[0], None)
        if want is None:
            yield f"README table at line {table.line}: row {row[0]!r} names no group of {table.source}"
        elif row != want:
            yield f"README table at line {table.line}: row {row} is not {want} ({table.source})"
    for label in expected:
        yield f"README table at line {table.line}: {table.source}'s row {label!r} is missing"


@functools.cache
def group_summaries(root: Path, task: str, controller: str) -> tuple[dict[str, Any], ...]:
    """The summaries of `<controller>-s<seed>` under results/<task>/compare, in seed order."""
    folder = root / "results" / task / "compare"
    found = [(int(m.group("seed")), d) for d in folder.glob(f"{controller}-s*")
             if (m := RUN_DIR.match(d.name)) and m.group("group") == controller]
    return tuple(_read_json(d / "summary.json") for _, d in sorted(found))


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}"


def readme_growth_row(task: str, static: tuple[dict[str, Any], ...], grown: tuple[dict[str, Any], ...]) -> list[str]:
    """The README's "Does growth pay?" row of a task from its static and heuristic runs' summaries."""
    source = static[0]["data_source"]
    epochs = f"{static[0]['epochs']} epochs"
    setting = f"{epochs}, {source['n_train']:,}-image training subset, full test split" if source["subset"] else epochs
    s_acc, g_acc = [s["final_val_acc"] for s in static], [s["final_val_acc"] for s in grown]
    gain = 100.0 * (statistics.mean(g_acc) - statistics.mean(s_acc))
    return [f"{task} ({setting})", " / ".join(map(_pct, s_acc)) + " %", " / ".join(map(_pct, g_acc)) + " %",
            f"{gain:+.1f} points"]


def _check_growth_table(table: Table, root: Path) -> Iterator[str]:
    controllers = [h.split()[0] for h in table.header[1:3]]
    if table.header[3:] != ["mean gain"] or controllers != ["static", "heuristic"]:
        yield f"README table at line {table.line}: header {table.header} is not task | static | heuristic | mean gain"
        return
    for row in table.rows:
        task = row[0].split(" (")[0]
        static, grown = (group_summaries(root, task, c) for c in controllers)
        if not static or len(static) != len(grown):
            yield f"README table at line {table.line}: no runs of {task!r} match {GROWTH_PATTERN}"
            continue
        want = readme_growth_row(task, static, grown)
        if row != want:
            yield f"README table at line {table.line}: row {row} is not {want} ({GROWTH_PATTERN})"


def check_readme(readme: Path, root: Path = ROOT) -> list[str]:
    """Every mismatch between the README's tables and their sources (module docstring); a table with a
    figure and no `source:` line under it, or a source of no known kind, is one too."""
    problems: list[str] = []
    for table in readme_tables(readme.read_text(encoding="utf-8")):
        if not any(re.search(r"\d", c) for row in table.rows for c in row):
            continue  # a table of names (the codenames) quotes nothing
        if table.source is None:
            problems.append(f"README table at line {table.line} has figures but no `source:` line under it")
        elif table.source.endswith("/compare.md"):
            problems += _check_compare_table(table, root)
        elif table.source == GROWTH_PATTERN:
            problems += _check_growth_table(table, root)
        else:
            problems.append(f"README table at line {table.line}: source {table.source} is of no known kind")
    return problems


def _record_order(folder: Path) -> list[tuple[str, int]]:
    """(group, seed) of each run in compare.json's order (the order compare ran and tabled them)."""
    return [(r["group"], r["seed"]) for r in _read_json(folder / "compare.json")["records"]]


def recompute_compare_md(folder: Path) -> str:
    """compare.md rebuilt from the run directories' summary.json (and the static-param runs' width from
    their config.json), with the header facts (task, epochs, device, data source, command) from compare.json."""
    meta = _read_json(folder / "compare.json")["meta"]
    on_disk = {(m.group("group"), int(m.group("seed"))): d for d in folder.iterdir()
               if d.is_dir() and (m := RUN_DIR.match(d.name)) and (d / "summary.json").is_file()}
    order = _record_order(folder)
    if set(order) != set(on_disk):
        raise AssertionError(f"{folder}: runs on disk {sorted(on_disk)} are not compare.json's {sorted(order)}")
    records = [RunRecord.from_summary(g, _read_json(on_disk[g, s] / "summary.json"), run_dir=str(on_disk[g, s]))
               for g, s in order]
    md = markdown_table(compare_groups(records, reference="static"), task=meta["task"], epochs=meta["epochs"],
                        device=meta["device"], data_source=meta["data_source"], command=meta["command"])
    for name in meta["matches"]:
        md += f"\n{match_note(name, *_matched(name, records, on_disk))}\n"
    return md + controller_notes(records)


def _matched(name: str, records: list[RunRecord],
             on_disk: dict[tuple[str, int], Path]) -> tuple[int, float, float, bool]:
    """(width, value, target, within) of a matched static group, from its runs and the grown runs."""
    quantity = "params" if name == "static-param" else "train_flops"
    grown = [getattr(r, quantity) for r in records if not r.group.startswith("static")]
    target = sum(grown) / len(grown)
    values = {getattr(r, quantity) for r in records if r.group == name}
    widths = {_read_json(d / "config.json")["config"]["optim"]["host_width"] for (g, _), d in on_disk.items()
              if g == name}
    if len(values) != 1 or len(widths) != 1:
        raise AssertionError(f"{name}: its runs differ in {quantity} {values} or width {widths}")
    value, width = values.pop(), widths.pop()
    return width, float(value), target, abs(value - target) <= MATCH_TOLERANCE * target
