"""The per-module table of a `make mutate` run: mutmut 3's results turned into a JSON record and a markdown summary.

    python benchmarks/mutation_summary.py [--mutants mutants] [--wall-s S] [--diffs] [--out benchmarks/results]

mutmut 3 keeps one `<source>.py.meta` JSON file per mutated source under `mutants/`, whose `exit_code_by_key` maps
each mutant's name (`esper.core.gates.x_check__mutmut_3`) to the exit code of the tests run against it. This script
reads those files (mutmut itself is needed only for `--diffs`, which asks `mutmut show` for each survivor's diff),
counts per module, and writes `<out>/mutation-<YYYYmmdd>.json` and `.md`. The kill rate is
(killed + timeout) / checked: a mutant that makes the tests hang is caught; one with no covering test is not.
Survivors judged by hand (equivalent, or a real gap) are read from `benchmarks/mutation_judgements.json`
({mutant name: one line}) and printed beside them.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
JUDGEMENTS = ROOT / "benchmarks" / "mutation_judgements.json"

# mutmut 3.8's own reading of an exit code (mutmut/stats.py `status_by_exit_code`), copied so that the summary
# needs no mutmut: 1 and 3 (pytest's internal error) kill, 0 survives, 36 and SIGXCPU time out.
_STATUS_BY_EXIT_CODE: dict[int | None, str] = {
    1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 2: "interrupted", None: "not checked",
    34: "skipped", 35: "suspicious", 36: "timeout", 37: "caught by type check", -24: "timeout", 24: "timeout",
    152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault",
}
_DETECTED = ("killed", "timeout", "caught by type check")
_UNCOUNTED = ("not checked", "skipped", "interrupted")  # never judged: left out of the rate's denominator


def status_of(exit_code: int | None) -> str:
    """mutmut's verdict for one mutant's exit code ("suspicious" for a code mutmut does not name)."""
    return _STATUS_BY_EXIT_CODE.get(exit_code, "suspicious")


def module_of(meta_path: Path, mutants: Path) -> str:
    """`mutants/esper/core/gates.py.meta` -> `esper.core.gates`."""
    relative = meta_path.relative_to(mutants).as_posix().removesuffix(".py.meta")
    return relative.replace("/", ".")


def module_row(exit_codes: dict[str, int | None]) -> dict[str, Any]:
    """One module's counts, kill rate (None when nothing was checked) and sorted survivors."""
    statuses = Counter(status_of(code) for code in exit_codes.values())
    checked = sum(n for status, n in statuses.items() if status not in _UNCOUNTED)
    detected = sum(statuses[status] for status in _DETECTED)
    return {
        "mutants": len(exit_codes),
        "killed": statuses["killed"] + statuses["caught by type check"],  # the type-check pre-filter is off here
        "survived": statuses["survived"],
        "timeout": statuses["timeout"],
        "no_tests": statuses["no tests"],
        "other": checked - detected - statuses["survived"] - statuses["no tests"],
        "not_checked": sum(statuses[status] for status in _UNCOUNTED),
        "kill_rate": detected / checked if checked else None,
        "survivors": sorted(name for name, code in exit_codes.items() if status_of(code) == "survived"),
    }


def read_results(mutants: Path, package: str = "esper") -> dict[str, dict[str, Any]]:
    """Every mutated module's row, keyed by module name, from the `.meta` files of `mutants/<package>/`
    (mutmut's copy of tests/ holds test fixtures, this script's among them, that are no results)."""
    rows = {}
    for meta_path in sorted((mutants / package).rglob("*.py.meta")):
        exit_codes = json.loads(meta_path.read_text(encoding="utf-8"))["exit_code_by_key"]
        if exit_codes:
            rows[module_of(meta_path, mutants)] = module_row(exit_codes)
    return rows


def total_row(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sums over every module, and the kill rate of the sums (not the mean of the rates)."""
    keys = ("mutants", "killed", "survived", "timeout", "no_tests", "other", "not_checked")
    total: dict[str, Any] = {key: sum(row[key] for row in rows.values()) for key in keys}
    checked = total["mutants"] - total["not_checked"]
    total["kill_rate"] = (total["killed"] + total["timeout"]) / checked if checked else None
    return total


def survivor_diff(name: str, mutmut: str) -> str:
    """The changed lines of one mutant (`mutmut show`), `-old` / `+new`, without the diff's headers."""
    shown = subprocess.run([mutmut, "show", name], capture_output=True, text=True, check=False).stdout
    lines = [line for line in shown.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return " / ".join(line.strip() for line in lines)


def _rate(rate: float | None) -> str:
    return "—" if rate is None else f"{100 * rate:.1f} %"


def markdown(record: dict[str, Any]) -> str:
    """The summary a reader quotes: the per-module table, the total, and each survivor with its judgement."""
    head = "| module | mutants | killed | survived | timeout | no tests | other | not run | kill rate |"
    lines = [f"# Mutation testing of esper/core — {record['time_utc']}", "",
             f"`{record['command']}` at commit `{record['git_commit']}`; wall time {record['wall_s']} s.", "",
             *([record["note"], ""] if record["note"] else []), head, "|" + "---|" * 9]
    for module, row in [*record["modules"].items(), ("**total**", record["total"])]:
        cells = [row[key] for key in ("mutants", "killed", "survived", "timeout", "no_tests", "other", "not_checked")]
        lines.append(f"| {module} | " + " | ".join(map(str, cells)) + f" | {_rate(row['kill_rate'])} |")
    lines += ["", "## Survivors"]
    for module, row in record["modules"].items():
        lines += ["", f"### {module}", ""] if row["survivors"] else []
        for name in row["survivors"]:
            judgement = record["judgements"].get(name, "not judged yet")
            diff = record["diffs"].get(name, "")
            lines.append(f"- `{name}`: {judgement}" + (f" — `{diff}`" if diff else ""))
    return "\n".join(lines) + "\n"


def build_record(mutants: Path, wall_s: float | None, diffs: bool, judgements: Path, note: str = "") -> dict[str, Any]:
    """The JSON record: when, where, the per-module rows, the total, survivors' diffs and judgements."""
    rows = read_results(mutants)
    mutmut = shutil.which("mutmut") or str(Path(sys.executable).with_name("mutmut"))
    survivors = [name for row in rows.values() for name in row["survivors"]]
    known = json.loads(judgements.read_text(encoding="utf-8")) if judgements.exists() else {}
    return {
        "benchmark": "mutation",
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "make mutate",
        "git_commit": _git_commit(),
        "wall_s": None if wall_s is None else round(wall_s),
        "note": note,
        "modules": rows,
        "total": total_row(rows),
        "diffs": {name: survivor_diff(name, mutmut) for name in survivors} if diffs else {},
        "judgements": {name: known[name] for name in survivors if name in known},
    }


def _git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False)
    return done.stdout.strip() or None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants", help="mutmut's folder (mutants/)")
    parser.add_argument("--wall-s", type=float, default=None, help="the run's wall time, recorded as given")
    parser.add_argument("--diffs", action="store_true", help="ask `mutmut show` for each survivor's changed lines")
    parser.add_argument("--judgements", type=Path, default=JUDGEMENTS, help="{mutant name: judgement} JSON")
    parser.add_argument("--note", default="", help="a paragraph on how this run was made (a sample, a cut-short run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of mutation-<date>.json and .md")
    args = parser.parse_args(argv)
    record = build_record(args.mutants, args.wall_s, args.diffs, args.judgements, args.note)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"mutation-{record['time_utc'][:10].replace('-', '')}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    summary = markdown(record)
    stem.with_suffix(".md").write_text(summary, encoding="utf-8")
    print(summary, end="")
    print(f"wrote {stem}.json and {stem}.md")
    return record


if __name__ == "__main__":
    main()
