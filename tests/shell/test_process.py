"""Process-wide settings are made once per process by the run driver, never by a Trainer or an RL env."""

import os

import pytest
import torch

from esper.core.errors import ConfigError
from esper.shell import process
from esper.shell.driver import load_data, train
from esper.shell.process import ProcessSettings, process_settings
from esper.shell.rl.envs import VecEnv
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
CPU_RUN, CUDA_RUN = ProcessSettings(deterministic=True, cuda=False), ProcessSettings(deterministic=False, cuda=True)


@pytest.fixture
def fresh_process(monkeypatch) -> list[ProcessSettings]:
    """A process no run has configured yet; what would be applied is recorded, not done."""
    applied: list[ProcessSettings] = []
    monkeypatch.setattr(process, "_PROCESS", process._Process())
    monkeypatch.setattr(process, "_apply", applied.append)
    return applied


def test_the_defaults_follow_the_device_and_the_flag_overrides_them():
    assert ProcessSettings.for_run(None, CPU) == CPU_RUN
    assert ProcessSettings.for_run(None, CUDA) == CUDA_RUN
    assert ProcessSettings.for_run(False, CPU) == ProcessSettings(deterministic=False, cuda=False)


def test_the_same_settings_are_applied_once(fresh_process):
    for _ in range(3):
        with process_settings(CPU_RUN), process_settings(CPU_RUN):  # nested: a compare's runs, one by one
            pass
    assert fresh_process == [CPU_RUN]


def test_other_settings_are_refused_while_a_run_holds_the_process_and_applied_after(fresh_process):
    with (process_settings(CPU_RUN), pytest.raises(ConfigError, match="needs a process of its own"),
          process_settings(CUDA_RUN)):
        pass
    with process_settings(CUDA_RUN):
        assert process.applied_settings() == CUDA_RUN
    assert fresh_process == [CPU_RUN, CUDA_RUN]


def test_apply_sets_torch_as_the_spec_says(monkeypatch):
    calls: dict[str, object] = {}
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda on, warn_only: calls.update(det=on))
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda p: calls.update(matmul=p))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    process._apply(CUDA_RUN)
    assert calls == {"det": False, "matmul": "high"} and torch.backends.cudnn.benchmark is True
    process._apply(ProcessSettings(deterministic=True, cuda=True))
    assert calls == {"det": True, "matmul": "highest"} and torch.backends.cudnn.benchmark is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def _forbid(monkeypatch, *names: str) -> None:
    def refusal(name: str):  # one function per name: torch's tracing rules map each object to one name
        def refuse(*args, **kwargs):
            raise AssertionError(f"a Trainer called torch.{name}: process-wide state")
        return refuse

    for name in names:
        monkeypatch.setattr(torch, name, refusal(name))


def test_trainers_and_rl_envs_leave_the_process_alone(monkeypatch):
    cfg = RunConfig(task="synth-images", controller="ppo", epochs=2, train_size=128, val_size=64, batch_size=64)
    data = load_data(cfg, CPU)
    _forbid(monkeypatch, "use_deterministic_algorithms", "set_float32_matmul_precision", "manual_seed")
    Trainer(RunConfig(epochs=2, train_size=128, val_size=64, batch_size=64), data, CPU)
    vec = VecEnv(cfg, [data], [CPU], n_envs=3, batch=0, epochs=2)
    assert len(vec) == 3


def test_a_ppo_run_of_many_envs_configures_the_process_once_as_its_flag_says(fresh_process, tmp_path):
    cfg = RunConfig(task="synth-images", controller="ppo", epochs=2, n_envs=2, episodes=4, train_size=128,
                    val_size=64, batch_size=64, device="cpu", telemetry_level="off", progress=False, report=False,
                    deterministic=False)
    summary = train(cfg, out=str(tmp_path / "ppo"))
    assert summary["updates"] == 2  # 1 + 2 × 2 Trainers built
    assert fresh_process == [ProcessSettings(deterministic=False, cuda=False)]
