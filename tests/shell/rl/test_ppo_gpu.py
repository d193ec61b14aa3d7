"""Issue 6 on the GPU (device tool): 4 envs, one CUDA stream each, complete a PPO run; bf16 autocast."""

import json

import pytest
import torch

from esper.shell.driver import train
from esper.shell.run_config import RunConfig


@pytest.mark.gpu
def test_four_envs_on_cuda_streams_complete_a_run(tmp_path):
    if not torch.cuda.is_available():
        pytest.fail("the gpu marker needs a CUDA device (make test-gpu runs on the device machine)")
    cfg = RunConfig(task="synth-images", controller="ppo", epochs=4, n_envs=4, episodes=8, device="cuda",
                    telemetry_level="minimal", progress=False)
    summary = train(cfg, out=str(tmp_path / "run"))
    assert summary["updates"] == 2 and summary["env_steps"] == 2 * 4 * 4
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "ppo.update" and e["fields"]["extra"]["applied"] for e in events)
