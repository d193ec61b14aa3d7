"""`--policy-act` (greedy | sample): how a trained policy picks its action when it grows a network.

A policy whose op head still favours WAIT (here by its `op_prior`) never germinates when played greedily;
sampled play grows, is reproducible from the run seed, and draws other actions under another seed.
"""

import json
from pathlib import Path

import pytest
import torch

from esper.shell.cli import main
from esper.shell.rl.policy_run import PolicyDecider

TINY = ["--task", "synth-images", "--epochs", "6", "--train-size", "128", "--val-size", "64", "--batch-size", "32",
        "--device", "cpu", "--telemetry-level", "minimal", "--no-progress"]


@pytest.fixture(scope="module")
def waiting_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One update of 2 envs from an op prior 1.5 above the other ops on WAIT: with WAIT and GERMINATE legal,
    p(WAIT) ≈ e^1.5 / (e^1.5 + 1) ≈ 0.82, so the argmax is WAIT and sampling germinates about one epoch in five."""
    run = tmp_path_factory.mktemp("policy") / "learned"
    assert main(["train", "--controller", "ppo", "--n-envs", "2", "--episodes", "2", "--rl.op_prior", "1.5,0,0,0",
                 "--out", str(run), *TINY]) == 0
    return run


def _grow(policy: Path, out: Path, *flags: str) -> list[dict]:
    assert main(["train", "--controller", "ppo", "--policy", str(policy), "--out", str(out), *TINY, *flags]) == 0
    return json.loads((out / "summary.json").read_text())["seeds"]


def test_policy_act_sample_needs_a_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["train", "--controller", "ppo", "--policy-act", "sample", "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "--policy-act sample needs --policy RUN_DIR" in capsys.readouterr().err


def test_greedy_play_of_a_waiting_policy_never_germinates(waiting_policy: Path, tmp_path: Path):
    assert _grow(waiting_policy, tmp_path / "greedy") == []
    assert _grow(waiting_policy, tmp_path / "greedy-s1", "--seed", "1", "--policy-act", "greedy") == []


def test_sampled_play_grows_and_is_reproducible_from_the_run_seed(waiting_policy: Path, tmp_path: Path):
    runs = {seed: _grow(waiting_policy, tmp_path / f"s{seed}", "--seed", str(seed), "--policy-act", "sample")
            for seed in (0, 1, 2)}
    # Fixed seeds; under the prior alone P(no germination in 18 epochs) ≈ 0.82^18 ≈ 3 %.
    assert sum(len(seeds) for seeds in runs.values()) > 0
    again = _grow(waiting_policy, tmp_path / "s0-again", "--seed", "0", "--policy-act", "sample")
    assert again == runs[0]
    germinations = {seed: [(s["slot"], s["germinated_epoch"]) for s in seeds] for seed, seeds in runs.items()}
    assert len({tuple(g) for g in germinations.values()}) > 1  # another seed draws other actions


def test_the_sampling_noise_is_a_function_of_run_seed_and_epoch():
    decider = PolicyDecider.__new__(PolicyDecider)  # only the noise stream is under test
    decider.noise_gen, decider.sample_seed = torch.Generator().manual_seed(0), 7

    def first_draw(epoch: int) -> float:
        return float(torch.rand(1, generator=decider._noise_generator(epoch)))

    seven = first_draw(3)
    assert seven == first_draw(3) != first_draw(4)
    decider.sample_seed = 8
    assert first_draw(3) != seven
