"""`build_learner` (docs/rl.md §4, §6): the optimizer the PPO learner steps with, and the mlp policy end to end."""

import json

import pytest
import torch

from esper.core.errors import ConfigError
from esper.core.rl_config import RLConfig
from esper.shell.checkpoint import read_checkpoint
from esper.shell.cli import main
from esper.shell.rl.runner import build_learner

CPU = torch.device("cpu")
DIMS = (6, 2, 3)


@pytest.mark.parametrize("decay", [0.0, 0.05])
def test_the_optimizer_is_adamw_with_the_configured_decay_and_adam_settings(decay: float):
    rl = RLConfig(hidden=16, head_hidden=8, weight_decay=decay, lr=2e-3, adam_eps=1e-6)
    optimizer = build_learner(DIMS, rl, 0, CPU).optimizer
    assert type(optimizer) is torch.optim.AdamW
    (group,) = optimizer.param_groups
    assert (group["weight_decay"], group["lr"], group["eps"]) == (decay, 2e-3, 1e-6)
    assert not group["fused"]  # fused only on CUDA


def test_decay_shrinks_weights_decoupled_from_the_gradient():
    """A zero gradient moves no Adam step, so what changes is the decay alone: p ← p·(1 − lr·wd)."""
    rl = RLConfig(hidden=16, head_hidden=8, weight_decay=0.5, lr=0.1)
    learner = build_learner(DIMS, rl, 0, CPU)
    before = [p.detach().clone() for p in learner.policy.parameters()]
    for p in learner.policy.parameters():
        p.grad = torch.zeros_like(p)
    learner.optimizer.step()
    for old, new in zip(before, learner.policy.parameters(), strict=True):
        torch.testing.assert_close(new.detach(), old * (1 - 0.1 * 0.5))


def test_a_negative_decay_is_refused():
    with pytest.raises(ConfigError, match="weight_decay"):
        RLConfig(weight_decay=-0.1)


COMMON = ["--task", "synth-images", "--epochs", "3", "--train-size", "256", "--val-size", "128", "--batch-size", "64",
          "--device", "cpu", "--telemetry-level", "minimal", "--no-progress"]


def test_a_tiny_ppo_run_with_the_mlp_policy_trains_and_its_policy_drives_a_run(tmp_path):
    learned, grown = tmp_path / "learned", tmp_path / "grown"
    assert main(["train", "--controller", "ppo", "--n-envs", "2", "--episodes", "2", "--rl.policy", "mlp",
                 "--no-report", *COMMON, "--out", str(learned)]) == 0
    saved = read_checkpoint(learned / "policy.pt")
    assert not any(k.startswith("lstm") for k in saved["policy"]) and "memory.0.weight" in saved["policy"]
    initial = build_learner((87, 3, 6), RLConfig(policy="mlp"), 0, CPU).policy.state_dict()
    assert any(not torch.equal(initial[k], saved["policy"][k]) for k in initial)  # one update moved it
    events = [json.loads(line) for line in (learned / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "ppo.update" for e in events) == 1
    assert main(["train", "--controller", "ppo", "--policy", str(learned), *COMMON, "--out", str(grown)]) == 0
    assert json.loads((grown / "summary.json").read_text())["epochs"] == 3
