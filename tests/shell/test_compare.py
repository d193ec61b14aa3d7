"""`esper-run compare` (issue 7): every controller over K seeds beside the small, param-matched and
FLOP-matched static baselines; compare.json / compare.md; user errors exit 2."""

import json

import pytest

from esper.shell.cli import main
from esper.shell.compare import match_width, static_params
from esper.shell.run_config import RunConfig

TINY = ["--task", "synth-images", "--epochs", "2", "--train-size", "128", "--val-size", "64", "--batch-size", "32",
        "--device", "cpu", "--telemetry-level", "off", "--no-progress"]


def test_match_width_takes_the_nearest_and_says_whether_it_is_within_five_percent():
    squares = match_width(lambda w: float(w * w), 50.0, range(1, 20))
    assert (squares.width, squares.value, squares.within) == (7, 49.0, True)
    far = match_width(lambda w: float(10 * w), 55.0, range(1, 20))
    assert far.width == 5 and not far.within  # 50 and 60 tie at distance 5: the smaller width


def test_param_count_grows_with_the_host_width():
    cfg = RunConfig(task="synth-images")
    counts = [static_params(cfg, w) for w in (4, 8, 16)]
    assert counts[0] < counts[1] < counts[2]


def test_compare_runs_every_group_and_writes_the_table(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--controllers", "heuristic", "--seeds", "2", "--out", str(out), *TINY]) == 0
    data = json.loads((out / "compare.json").read_text())
    groups = [g["group"] for g in data["groups"]]
    assert groups == ["static", "heuristic", "static-param", "static-flop"]
    assert all(g["n"] == 2 for g in data["groups"])
    assert {r["group"] for r in data["records"]} == set(groups)
    assert all(r["train_flops"] > 0 for r in data["records"])
    for name in ("static-param", "static-flop"):
        match = data["meta"]["matches"][name]
        assert match["width"] >= 1 and match["target"] > 0
    heuristic = next(g for g in data["groups"] if g["group"] == "heuristic")
    assert heuristic["vs_static"] is not None and "p" in heuristic["vs_static"]
    md = (out / "compare.md").read_text()
    assert "esper-run compare" in md and "| heuristic |" in md and "static-flop" in md
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "report") == sorted(
        f"{g}-s{s}" for g in groups for s in (0, 1))


@pytest.mark.parametrize(("argv", "message"), [
    (["--seeds", "1"], "--seeds must be >= 2"),
    (["--controllers", "ppo"], "needs --policy"),
])
def test_compare_user_errors_exit_2(tmp_path, capsys, argv, message):
    assert main(["compare", *argv, "--out", str(tmp_path / "c"), *TINY]) == 2
    assert message in capsys.readouterr().err


def test_compare_refuses_a_non_empty_directory(tmp_path, capsys):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("user data")
    assert main(["compare", "--seeds", "2", "--out", str(tmp_path / "c"), *TINY]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "c" / "keep.txt").read_text() == "user data"
