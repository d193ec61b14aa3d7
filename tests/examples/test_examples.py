"""The analysis scripts of `examples/` on tiny real runs: a heuristic run whose seed germinates, moves
through its stages and is culled, and a two-update PPO run. Each script runs as a user would run it (a
subprocess of this interpreter, the repository on PYTHONPATH); a doctored run must make it report the
mismatch (exit 1), or, for learning_curve.py, show the doctored numbers."""

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from esper.core.rewards import MODES
from esper.core.stats import pearson_of_finite
from esper.shell.cli import main
from esper.shell.report_data import read_episodes
from esper.shell.rl.record import load_rollout_record

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--train-size", "256", "--val-size", "128", "--batch-size", "64", "--no-progress", "--no-report"]
REPLAYED = re.compile(r"^replayed (\d+) epochs, (\d+) events, (\d+) transitions: (\d+) mismatches$", re.M)
HAS_JAX = importlib.util.find_spec("jax") is not None


@pytest.fixture(scope="session")
def heuristic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Early germination from epoch 1: the seed germinates at once and reaches PROBATIONARY within 14 epochs.
    out = tmp_path_factory.mktemp("examples") / "heuristic"
    assert main(["train", "--epochs", "14", "--out", str(out), *SMALL, "--germination", "early",
                 "--min-germinate-epoch", "1"]) == 0
    return out


@pytest.fixture(scope="session")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("examples") / "ppo"
    assert main(["train", "--controller", "ppo", "--epochs", "4", "--n-envs", "2", "--episodes", "4",
                 "--out", str(out), *SMALL]) == 0
    return out


def _script(name: str, run_dir: Path, *options: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), str(run_dir), *options],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def _example_module(name: str) -> ModuleType:
    """An example script imported in-process: its functions, and `main` without a subprocess's start-up."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rewrite_events(run_dir: Path, edit) -> None:
    path = run_dir / "events.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(edit(r)) + "\n" for r in records))


# --- replay_lifecycle.py ----------------------------------------------------------------------------


def test_the_replay_reproduces_every_logged_transition(heuristic_run: Path) -> None:
    result = _script("replay_lifecycle.py", heuristic_run)
    assert result.returncode == 0, result.stdout + result.stderr
    epochs, events, transitions, mismatches = map(int, REPLAYED.search(result.stdout).groups())
    assert (epochs, mismatches) == (14, 0)
    assert transitions >= 4 and events > transitions  # germinate, G1, G2 at least; gates and the germination
    seed_line = next(line for line in result.stdout.splitlines() if "#" in line.split()[0])
    assert "GERMINATED@1 → TRAINING@1 → BLENDING@" in seed_line
    assert "MISMATCH" not in result.stdout


def test_a_doctored_action_is_a_mismatch(heuristic_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(heuristic_run, tmp_path / "doctored")
    germinated = next(json.loads(line)["epoch"] for line in (run / "events.jsonl").read_text().splitlines()
                      if json.loads(line)["event"] == "seed.germinated")

    def wait_instead(record: dict) -> dict:
        if record["event"] == "epoch.metrics" and record["epoch"] == germinated:
            record["fields"]["action"] = "WAIT"
        return record

    _rewrite_events(run, wait_instead)
    result = _script("replay_lifecycle.py", run)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"MISMATCH epoch {germinated} event 0: seed.germinated" in result.stdout
    assert int(REPLAYED.search(result.stdout).group(4)) > 0


def test_a_ppo_run_cannot_be_replayed_and_says_so_in_one_line(ppo_run: Path) -> None:
    result = _script("replay_lifecycle.py", ppo_run)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("replay_lifecycle: error: ")
    assert "MISMATCH" not in result.stdout


# --- recompute_returns.py ---------------------------------------------------------------------------


def test_recomputed_rewards_returns_and_advantages_match_the_record(ppo_run: Path) -> None:
    assert sorted(p.name for p in (ppo_run / "rollouts").iterdir()) == ["update-00001.npz", "update-00002.npz"]
    result = _script("recompute_returns.py", ppo_run)
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("envs 2, steps 4: max |Δ| rewards ") and last.endswith(": match")
    assert "(torch)" in last
    assert ("(jax)" in last) if HAS_JAX else ("jax not installed" in last)
    worst = [float(x) for x in re.findall(r"(?:rewards|returns|advantages) ([0-9.e+-]+)", last)]
    assert len(worst) == (6 if HAS_JAX else 3) and max(worst) < 1e-5


def test_a_doctored_record_is_a_mismatch(ppo_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(ppo_run, tmp_path / "doctored")
    path = run / "rollouts" / "update-00002.npz"
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["returns"][0, 1] += 0.5  # what the run logged
    arrays["inputs.acc"][1, 3] += 0.25  # what the terminal reward of env 1 was computed from
    np.savez_compressed(path, **arrays)
    result = _script("recompute_returns.py", run)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "MISMATCH update 2 env 0 step 1: returns logged" in result.stdout
    assert "MISMATCH update 2 env 1 step 3: reward.total logged" in result.stdout
    assert result.stdout.strip().endswith("MISMATCH")


# --- reward_modes.py --------------------------------------------------------------------------------


def test_the_run_modes_row_is_the_correlation_of_episodes_csv(ppo_run: Path) -> None:
    result = _script("reward_modes.py", ppo_run, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    table = json.loads(result.stdout)
    assert (table["reward_mode"], table["updates"], table["episodes"]) == ("shaped", 2, 4)
    rows = {row["return"]: row for row in table["rows"]}
    components = ["contribution", "pbrs", "rent", "terminal", "governor", "early_cull"]
    assert list(rows) == [*MODES, *(f"shaped.{k}" for k in components)]
    logged = read_episodes(ppo_run / "episodes.csv")  # the join reproduces episodes.csv's own correlation
    for outcome in ("final_acc", "train_flops"):
        r, n = pearson_of_finite(logged["return"].tolist(), logged[outcome].tolist())
        assert rows["shaped"][outcome]["n"] == n == 4
        assert rows["shaped"][outcome]["r"] == pytest.approx(r, abs=1e-6)
    assert rows["shaped.early_cull"]["final_acc"]["r"] is None  # shaped never pays it: a constant 0
    text = _script("reward_modes.py", ppo_run).stdout
    assert re.search(r"^shaped \*\s+[+-]\d\.\d{3}\s+4\s", text, re.M)
    assert re.search(r"^shaped\.early_cull\s+n/a\s+4\s+n/a\s+4$", text, re.M)


def test_a_sparse_return_is_its_formula_on_the_recorded_inputs(ppo_run: Path) -> None:
    rec = load_rollout_record(ppo_run / "rollouts" / "update-00002.npz")
    cfg, env = rec["rl_config"], 1
    inputs = {k.removeprefix("inputs."): v[env].astype(np.float64) for k, v in rec.items() if k.startswith("inputs.")}
    params = inputs["seed_params_before"].sum(-1)
    score = np.clip(inputs["acc"] - cfg.sparse_param_weight * params / cfg.sparse_param_scale, -1.0, 1.0)
    per_step = inputs["terminal"] * score - cfg.governor_penalty * inputs["rolled_back"]
    by_hand = float((per_step * rec["valid"][env]).sum())
    sums = _example_module("reward_modes").episode_sums(rec)
    assert by_hand != 0.0 and sums["sparse"][env] == pytest.approx(by_hand, abs=1e-6)


def test_a_return_that_disagrees_with_episodes_csv_is_a_mismatch(ppo_run: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = shutil.copytree(ppo_run, tmp_path / "doctored")
    lines = (run / "episodes.csv").read_text().splitlines()
    update, env, ret, *rest = lines[4].split(",")  # the last row: update 2, env 1
    lines[4] = ",".join([update, env, str(float(ret) + 1e-3), *rest])
    (run / "episodes.csv").write_text("\n".join(lines) + "\n")
    assert _example_module("reward_modes").main([str(run)]) == 1
    assert capsys.readouterr().err.startswith("reward_modes: MISMATCH update 2 env 1: episodes.csv return ")


@pytest.mark.parametrize("broken", ["no directory", "no rollouts", "no episodes.csv"])
def test_a_bad_run_dir_is_one_line_and_exit_2(broken: str, ppo_run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "missing"
    if broken != "no directory":
        run = shutil.copytree(ppo_run, tmp_path / "run")
        if broken == "no rollouts":
            shutil.rmtree(run / "rollouts")
        else:
            (run / "episodes.csv").unlink()
    assert _example_module("reward_modes").main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("reward_modes: error: ")
    assert {"no directory": "is not a run directory", "no rollouts": "holds no rollouts/update-*.npz",
            "no episodes.csv": "holds no episodes.csv"}[broken] in err


# --- learning_curve.py ------------------------------------------------------------------------------


def test_the_learning_curve_is_the_run_s_episodes_and_its_recorded_advantages(ppo_run: Path) -> None:
    result = _script("learning_curve.py", ppo_run, "--window", "1", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    curve, logged = json.loads(result.stdout), read_episodes(ppo_run / "episodes.csv")
    assert (curve["updates"], curve["episodes"], curve["window"]) == (2, 4, 1)
    first, last = logged["update"] == 1, logged["update"] == 2
    for column in ("return", "final_acc", "culls"):
        assert curve["means"][column]["first"] == pytest.approx(logged[column][first].mean())
        assert curve["means"][column]["last"] == pytest.approx(logged[column][last].mean())
    change = logged["final_acc"][last].mean() - logged["final_acc"][first].mean()
    assert curve["final_acc_change"]["diff"] == pytest.approx(change)
    assert sum(row["episodes"] for row in curve["by_fossils"]) == 4
    spreads = [np.std(logged["final_acc"][rows], ddof=1) for rows in (first, last)]
    assert curve["noise"]["spread"] == pytest.approx(np.mean(spreads))
    r, _ = pearson_of_finite(logged["return"].tolist(), logged["final_acc"].tolist())
    assert curve["return_r"]["final_acc"] == pytest.approx(r)
    records = [load_rollout_record(p) for p in sorted((ppo_run / "rollouts").iterdir())]
    valid = sum(int((rec["valid"] > 0).sum()) for rec in records)
    assert [row["op"] for row in curve["op_advantage"]] == ["WAIT", "GERMINATE", "CULL", "FOSSILIZE"]
    assert sum(row["steps"] for row in curve["op_advantage"]) == valid == 16  # 2 updates x 2 envs x 4 epochs
    text = _script("learning_curve.py", ppo_run, "--window", "1").stdout
    assert "final accuracy, last - first: " in text and re.search(r"^WAIT\s+\d+\s+[+-]\d\.\d{3} ± ", text, re.M)


def test_the_per_op_signal_is_read_from_the_records(ppo_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(ppo_run, tmp_path / "doctored")
    for path in (run / "rollouts").iterdir():
        with np.load(path) as archive:
            arrays = dict(archive)
        arrays["advantages_normalized"][arrays["inputs.op"] == 0] = 2.0  # every WAIT step's advantage
        np.savez_compressed(path, **arrays)
    rows = {row["op"]: row for row in _example_module("learning_curve").op_advantages(run)}
    assert rows["WAIT"]["steps"] > 1 and rows["WAIT"]["mean"] == 2.0 and rows["WAIT"]["se"] == 0.0


def test_a_policy_that_ends_better_shows_a_real_change() -> None:
    curve = _example_module("learning_curve")
    update = np.repeat(np.arange(1, 7), 4).astype(float)
    acc = np.where(update >= 5, 0.85, 0.80) + np.tile([0.0, 0.01, -0.01, 0.005], 6)
    fossils = (update >= 5).astype(float)
    episodes = {"update": update, "return": acc, "final_acc": acc, "train_flops": np.full(24, 1e9),
                "germinations": fossils + 1, "fossilizations": fossils, "culls": 1 - fossils}
    result = curve.first_vs_last(episodes, window=2)
    assert result["final_acc_change"]["diff"] == pytest.approx(0.05) and result["final_acc_change"]["p"] < 0.01
    assert result["means"]["fossilizations"] == {"first": 0.0, "last": 1.0}
    by_fossils = curve.accuracy_by_fossils(episodes)
    assert [(row["fossils"], row["episodes"]) for row in by_fossils] == [(0, 16), (1, 8)]
    noise = curve.outcome_noise(episodes)
    assert noise["spread"] == pytest.approx(np.std([0.0, 0.01, -0.01, 0.005], ddof=1))  # the same in every update
    assert noise["slope"] == pytest.approx(0.05) and 0.9 < noise["r"] < 1.0
    assert math.isnan(curve.outcome_noise({**episodes, "fossilizations": np.zeros(24)})["slope"])
    assert curve.without_nan({"op": [{"mean": math.nan}]}) == {"op": [{"mean": None}]}


@pytest.mark.parametrize("window", ["2", "0"])
def test_a_window_the_run_cannot_fill_is_one_line_and_exit_2(window: str, ppo_run: Path) -> None:
    result = _script("learning_curve.py", ppo_run, "--window", window)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"learning_curve: --window {window} needs 1 <= K <= U/2; the run has U = 2 updates\n"
