"""`esper.shell.compare_table`: compare.md, compare.json and the console table from known statistics."""

import io
import json
import math

import pytest
from rich.console import Console

from esper.core.stats import RunRecord, compare_groups
from esper.shell.compare_table import HEADERS, compare_json, console_table, controller_notes, eng, markdown_table


def rec(group: str, seed: int, final: float, params: int, flops: int, fossilized: int = 0) -> RunRecord:
    return RunRecord(group=group, seed=seed, final_val_acc=final, best_val_acc=final + 0.01, params=params,
                     train_flops=flops, wall_s=10.0 + seed, fossilized=fossilized, culled=1 - fossilized,
                     run_dir=f"runs/{group}-s{seed}")


RECORDS = [
    rec("static", 0, 0.70, 1000, 1_000_000_000_000),
    rec("static", 1, 0.72, 1000, 1_000_000_000_000),
    rec("static", 2, 0.74, 1000, 1_000_000_000_000),
    rec("heuristic", 0, 0.80, 1200, 1_230_000_000_000, 1),
    rec("heuristic", 1, 0.82, 1300, 1_230_000_000_000, 1),
    rec("heuristic", 2, 0.84, 1100, 1_230_000_000_000, 0),
]
STATS = compare_groups(RECORDS)
CMD = "esper-run compare --task synth-images --controllers static,heuristic --seeds 3 --epochs 20"


def md() -> str:
    return markdown_table(STATS, task="synth-images", epochs=20, device="cpu", data_source="synth-images/v1",
                          command=CMD)


@pytest.mark.parametrize(("x", "text"), [
    (1.23e12, "1.23e12"), (4.5e10, "45.0e9"), (1.23e11, "123e9"), (999.6e9, "1.00e12"), (0, "0"),
    (1234.0, "1.23e3"), (12.0, "12.0"), (-2.5e6, "-2.50e6"), (0.5, "500e-3"),
])
def test_engineering_notation(x: float, text: str) -> None:
    assert eng(x) == text


def test_markdown_header_and_command() -> None:
    text = md()
    assert "synth-images" in text.splitlines()[0]
    header = next(line for line in text.splitlines() if line.startswith("Task"))
    assert "20 epochs" in header and "`cpu`" in header and "synth-images/v1" in header
    assert f"```sh\n{CMD}\n```" in text


def test_markdown_rows_and_numbers() -> None:
    lines = md().splitlines()
    assert "| " + " | ".join(HEADERS) + " |" in lines
    static = next(line for line in lines if line.startswith("| static |"))
    heur = next(line for line in lines if line.startswith("| heuristic |"))
    assert static == ("| static | 3 | 72.00 ± 2.00 (70.00–74.00) | 73.00 ± 2.00 | 1,000 ± 0 | 1.00e12 ± 0 "
                      "| 11.0 ± 1.0 | 0.0 ± 0.0 | 1.0 ± 0.0 | — |")
    cells = [c.strip() for c in heur.strip("|").split("|")]
    assert cells[:9] == ["heuristic", "3", "82.00 ± 2.00 (80.00–84.00)", "83.00 ± 2.00", "1,200 ± 100",
                         "1.23e12 ± 0", "11.0 ± 1.0", "0.7 ± 0.6", "0.3 ± 0.6"]
    w = STATS[1].vs_static
    assert w is not None and w.real
    assert cells[9] == f"Δ +10.00 pp, p = {w.p:.3f}, real"


def test_markdown_noise_and_small_samples() -> None:
    records = [*RECORDS, rec("ppo", 0, 0.73, 1000, 10**12), rec("static-param", 0, 0.70, 1000, 10**12),
               rec("static-param", 1, 0.75, 1000, 10**12)]
    lines = markdown_table(compare_groups(records), task="t", epochs=1, device="cpu", data_source="d",
                           command="c").splitlines()
    ppo = next(line for line in lines if line.startswith("| ppo |"))
    param = next(line for line in lines if line.startswith("| static-param |"))
    assert ppo.endswith("| Δ +1.00 pp, p n/a, n < 2 |")
    assert param.endswith("within noise |") and "Δ +0.50 pp" in param


def test_json_round_trips_and_has_every_record() -> None:
    meta = {"task": "synth-images", "epochs": 20, "command": CMD, "seeds": [0, 1, 2]}
    out = compare_json(STATS, RECORDS, meta)
    back = json.loads(json.dumps(out, allow_nan=False))
    assert back == out
    assert back["meta"] == meta
    assert len(back["records"]) == len(RECORDS)
    assert back["records"][3]["run_dir"] == "runs/heuristic-s0"
    assert [g["group"] for g in back["groups"]] == ["static", "heuristic"]
    assert back["groups"][1]["final"]["mean"] == pytest.approx(0.82)
    assert back["groups"][1]["vs_static"]["verdict"] == "real"
    assert back["groups"][0]["vs_static"] is None


def test_json_replaces_nan_by_null() -> None:
    stats = compare_groups([*RECORDS, rec("ppo", 0, 0.73, 1000, 10**12)])
    back = json.loads(json.dumps(compare_json(stats, RECORDS, {"x": math.nan}), allow_nan=False))
    assert back["groups"][2]["vs_static"]["p"] is None and back["meta"]["x"] is None


def test_console_table_renders_rows() -> None:
    table = console_table(STATS)
    assert table.row_count == 2 and len(table.columns) == len(HEADERS)
    buf = io.StringIO()
    Console(file=buf, width=400, color_system=None).print(table)
    text = buf.getvalue()
    assert "heuristic" in text and "82.00 ± 2.00 (80.00–84.00)" in text and "1.23e12" in text


def test_controller_notes_put_each_later_controller_against_each_earlier_one() -> None:
    ppo = [rec("ppo", s, acc, 1200, 1_107_000_000_000) for s, acc in enumerate((0.81, 0.83, 0.85))]
    records = [*RECORDS, *ppo, rec("static-param", 0, 0.9, 1200, 3_000_000_000_000)]
    # ppo − heuristic = +1 point on equal spreads (std 0.02, n 3): t = 0.01 / sqrt(2 * 0.02**2 / 3) = 0.61.
    assert controller_notes(records) == (
        "\nppo vs heuristic (Welch's t of final val acc): Δ +1.00 pp, p = 0.573, within noise; "
        "train FLOPs 0.90× heuristic's\n")
    assert controller_notes(RECORDS) == ""  # one controller: nothing head to head


def test_controller_notes_follow_the_controllers_order() -> None:
    rand = [rec("random", s, 0.6, 1000, 2_460_000_000_000) for s in range(3)]
    notes = controller_notes([*RECORDS, *rand, *[rec("ppo", s, 0.8, 1000, 1_230_000_000_000) for s in range(3)]])
    assert [line.split(" (")[0] for line in notes.split("\n") if line] == [
        "random vs heuristic", "ppo vs heuristic", "ppo vs random"]
    assert "train FLOPs 0.50× random's" in notes
