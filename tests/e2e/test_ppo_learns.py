"""Issue 6: learning is real. PPO on synth-images: the mean episode return of the last updates is above
that of the first (printed with -s; the README quotes the numbers). Slow: ~30 CPU-minutes.

    pytest -m slow tests/e2e/test_ppo_learns.py -s
"""

import statistics

import pytest
import torch

from esper.shell.driver import train
from esper.shell.run_config import RunConfig

CONFIG = RunConfig(task="synth-images", controller="ppo", epochs=10, n_envs=4, episodes=4 * 30, train_size=512,
                   val_size=256, device="cpu", telemetry_level="minimal", progress=False)
WINDOW = 6  # updates averaged at each end


@pytest.mark.slow
def test_ppo_return_rises_over_training(tmp_path):
    torch.set_num_threads(2)
    summary = train(CONFIG, out=str(tmp_path / "ppo"))
    returns = [h["return"] for h in summary["history"]]
    first, last = statistics.mean(returns[:WINDOW]), statistics.mean(returns[-WINDOW:])
    print(f"mean episode return: first {WINDOW} updates {first:+.4f}, last {WINDOW} updates {last:+.4f}; "
          f"per update {[round(r, 3) for r in returns]}")
    assert last > first
