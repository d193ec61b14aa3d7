"""The analysis scripts of `examples/` on tiny real runs: a heuristic run whose seed germinates, moves
through its stages and is culled, and a two-update PPO run. Each script runs as a user would run it (a
subprocess of this interpreter, the repository on PYTHONPATH); a doctored run must make it report the
mismatch and exit 1."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from esper.shell.cli import main

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


def _script(name: str, run_dir: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), str(run_dir)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)


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
