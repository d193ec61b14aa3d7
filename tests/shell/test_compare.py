"""`esper-run compare` (issue 7): every controller over K seeds beside the small, param-matched and
FLOP-matched static baselines; compare.json / compare.md; user errors exit 2. Issue 15: the FLOP
match predicts on the data the runs load; `--jobs N` equals `--jobs 1`."""

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from esper.shell.cli import main
from esper.shell.compare import match_width, static_params
from esper.shell.run_config import RunConfig, load_config_file

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
    """Seeds 3 and 4 (`--first-seed 3`): a policy is judged on run seeds apart from those it was designed on."""
    out = tmp_path / "cmp"
    assert main(["compare", "--controllers", "heuristic", "--seeds", "2", "--first-seed", "3", "--out", str(out),
                 *TINY]) == 0
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
        f"{g}-s{s}" for g in groups for s in (3, 4))
    assert data["meta"]["first_seed"] == 3
    assert {load_config_file(out / f"{g}-s{s}" / "config.json")["seed"] == s for g in groups for s in (3, 4)} == {True}


def test_compare_judges_a_trained_policy_beside_the_heuristic(tmp_path, capsys):
    """`--controllers heuristic,ppo --policy RUN` (it was refused as "--policy needs --controller ppo"): the ppo
    group runs the policy, the others do not, and compare.md puts ppo against the heuristic."""
    learned = tmp_path / "learned"
    assert main(["train", "--controller", "ppo", "--n-envs", "2", "--episodes", "2", "--out", str(learned), *TINY]) == 0
    out = tmp_path / "cmp"
    assert main(["compare", "--controllers", "heuristic,ppo", "--policy", str(learned), "--seeds", "2",
                 "--out", str(out), *TINY]) == 0, capsys.readouterr().err
    data = json.loads((out / "compare.json").read_text())
    assert [g["group"] for g in data["groups"]] == ["static", "heuristic", "ppo", "static-param", "static-flop"]
    policies = {d.name: load_config_file(d / "config.json")["policy"] for d in out.iterdir() if d.name != "report"
                and d.is_dir()}
    assert {name for name, policy in policies.items() if policy == str(learned)} == {"ppo-s0", "ppo-s1"}
    assert {policy for name, policy in policies.items() if not name.startswith("ppo")} == {None}
    assert "\nppo vs heuristic (Welch's t of final val acc): Δ " in (out / "compare.md").read_text()


@pytest.mark.parametrize(("argv", "message"), [
    (["--seeds", "1"], "--seeds must be >= 2"),
    (["--first-seed", "-1"], "--first-seed must be >= 0"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--controllers", "ppo"], "needs --policy"),
    (["--nproc", "2"], "compare runs each run in one process (use --jobs N for several at once), not --nproc 2"),
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


def write_fashion_mnist_idx(folder: Path, n_train: int, n_test: int) -> Path:
    """A tiny Fashion-MNIST in its IDX layout (gzip, big-endian headers), as `--data-dir` reads it."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8).tobytes()
        labels = (np.arange(n) % 10).astype(np.uint8).tobytes()
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(struct.pack(">IIII", 2051, n, 28, 28)
                                                                              + pixels))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">II", 2049, n) + labels))
    return folder


def test_flop_match_predicts_what_the_chosen_width_then_counts_on_a_small_data_dir(tmp_path):
    """Issue 15 #9: 100 training images given by --data-dir (the preset says 60,000). The FLOP-matched
    width's predicted FLOPs equal what its runs count: the same counting step × the samples the loaded
    split trains, so they may differ by float rounding only (relative tolerance 1e-9)."""
    data = write_fashion_mnist_idx(tmp_path / "fm", n_train=100, n_test=40)
    out = tmp_path / "cmp"
    assert main(["compare", "--task", "fashion-mnist", "--data-dir", str(data), "--controllers", "heuristic",
                 "--seeds", "2", "--epochs", "2", "--batch-size", "32", "--out", str(out), "--device", "cpu",
                 "--telemetry-level", "off", "--no-progress"]) == 0
    result = json.loads((out / "compare.json").read_text())
    predicted = result["meta"]["matches"]["static-flop"]["value"]
    counted = [r["train_flops"] for r in result["records"] if r["group"] == "static-flop"]
    assert len(counted) == 2 and counted[0] == counted[1]
    assert predicted == pytest.approx(counted[0], rel=1e-9)


def _table(out: Path) -> dict:
    """compare.json without what may differ between two compares of the same runs: wall times, the
    folder-bearing run paths and the command line."""
    data = json.loads((out / "compare.json").read_text())
    for record in data["records"]:
        record.pop("wall_s")
        record.pop("run_dir")
    for group in data["groups"]:
        for key in [k for k in group if "wall" in k]:
            group.pop(key)
    data["meta"].pop("command")
    return data


def test_compare_jobs_2_equals_jobs_1(tmp_path):
    """Issue 15 #12: the same seeds in two worker processes give the same table as one after another
    (every group, the matched ones included; a tiny --data-dir keeps data loading out of the cost)."""
    data = write_fashion_mnist_idx(tmp_path / "fm", n_train=96, n_test=32)
    tables = []
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        assert main(["compare", "--task", "fashion-mnist", "--data-dir", str(data), "--controllers", "heuristic",
                     "--seeds", "2", "--jobs", str(jobs), "--epochs", "2", "--batch-size", "32", "--out", str(out),
                     "--device", "cpu", "--telemetry-level", "off", "--no-progress"]) == 0
        tables.append(_table(out))
    assert tables[0] == tables[1]
    assert [r["group"] for r in tables[1]["records"]] == [g for g in ("static", "heuristic", "static-param",
                                                                       "static-flop") for _ in (0, 1)]


def test_a_failing_run_in_a_worker_ends_the_compare_with_one_line(tmp_path):
    """A run that fails inside a worker (a truncated dataset: a user error) is one line and exit 2, not a
    hang (the subprocess has a deadline) nor a traceback."""
    data = write_fashion_mnist_idx(tmp_path / "fm", n_train=20, n_test=10)
    images = data / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-5]))
    argv = ["compare", "--task", "fashion-mnist", "--data-dir", str(data), "--seeds", "2", "--jobs", "2",
            "--epochs", "1", "--out", str(tmp_path / "c"), "--device", "cpu", "--telemetry-level", "off",
            "--no-progress"]
    done = subprocess.run([sys.executable, "-m", "esper.shell.cli", *argv], capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esper-run: error:")
