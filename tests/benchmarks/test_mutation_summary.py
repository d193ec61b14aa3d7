"""benchmarks/mutation_summary.py: mutmut's `.meta` results read back into the per-module table (no mutmut needed)."""

import json
import re
from pathlib import Path

import mutation_summary

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mutmut"


def test_exit_codes_read_as_mutmut_reads_them():
    assert [mutation_summary.status_of(code) for code in (1, 3, 0, 36, 33, None, -11, 99)] == [
        "killed", "killed", "survived", "timeout", "no tests", "not checked", "segfault", "suspicious"]


def test_each_module_is_counted_and_its_rate_is_caught_over_checked():
    rows = mutation_summary.read_results(FIXTURE)
    assert list(rows) == ["esper.core.alpha", "esper.core.gates"]  # blend's meta holds no mutant: no row
    gates = rows["esper.core.gates"]
    assert {key: gates[key] for key in ("mutants", "killed", "survived", "timeout", "no_tests", "other")} == {
        "mutants": 8, "killed": 3, "survived": 1, "timeout": 1, "no_tests": 1, "other": 1}
    assert gates["not_checked"] == 1
    assert gates["kill_rate"] == 4 / 7  # killed 3 + timeout 1 over the 7 checked (the unchecked one is left out)
    assert gates["survivors"] == ["esper.core.gates.x_check_gate__mutmut_3"]
    alpha = rows["esper.core.alpha"]
    assert alpha["not_checked"] == 2 and alpha["kill_rate"] is None  # a module not run has no rate, not 0 %
    total = mutation_summary.total_row(rows)
    assert total["mutants"] == 10 and total["not_checked"] == 3 and total["kill_rate"] == 4 / 7


def test_the_record_and_summary_are_written_with_judgements(tmp_path, capsys):
    judgements = tmp_path / "judgements.json"
    judgements.write_text(json.dumps({"esper.core.gates.x_check_gate__mutmut_3": "equivalent: a dead branch",
                                      "esper.core.gates.x_gone__mutmut_1": "a stale entry, not printed"}))
    record = mutation_summary.main(["--mutants", str(FIXTURE), "--wall-s", "61.6", "--judgements", str(judgements),
                                    "--note", "A sampled run.", "--out", str(tmp_path)])
    json_path, = tmp_path.glob("mutation-*.json")
    assert re.fullmatch(r"mutation-\d{8}\.json", json_path.name)
    assert json.loads(json_path.read_text()) == record
    assert record["wall_s"] == 62 and record["diffs"] == {}
    assert record["judgements"] == {"esper.core.gates.x_check_gate__mutmut_3": "equivalent: a dead branch"}
    summary = json_path.with_suffix(".md").read_text()
    assert "| esper.core.gates | 8 | 3 | 1 | 1 | 1 | 1 | 1 | 57.1 % |" in summary
    assert "| esper.core.alpha | 2 | 0 | 0 | 0 | 0 | 0 | 2 | — |" in summary
    assert "| **total** | 10 | 3 | 1 | 1 | 1 | 1 | 3 | 57.1 % |" in summary
    assert "- `esper.core.gates.x_check_gate__mutmut_3`: equivalent: a dead branch" in summary
    assert "stale" not in summary and "\nA sampled run.\n" in summary
    assert summary in capsys.readouterr().out
