"""docs/architecture.md "Performance shape" on the GPU (device tool): launching an epoch — train, gradient
ratios, finite checks, validation with every counterfactual variant — queues work without one host
sync, whatever stage the seed is in. `torch.cuda.set_sync_debug_mode("error")` turns a sync into
an exception. A scripted controller walks one seed through every stage, so the path does not hang
on what the heuristic decides on a non-deterministic GPU run."""

import pytest
import torch

from esper.core.actions import FactoredAction, Op
from esper.core.config import LifecycleConfig
from esper.core.stages import Stage
from esper.shell.driver import load_data
from esper.shell.process import ProcessSettings, process_settings
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer

LATE = 2  # slot index of `late` on the cifar10 host


def germinate_then_fossilize(trainer: Trainer, pending) -> tuple[FactoredAction, str, list]:
    if pending.epoch == 1:
        return FactoredAction.germinate(LATE, trainer.rules.catalogue.germinable_index("conv_light")), "script", []
    if pending.masks.slot[Op.FOSSILIZE][LATE]:
        return FactoredAction.fossilize(LATE), "script", []
    return FactoredAction.wait(), "script", []


def launch_without_sync(trainer: Trainer):
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        return trainer.launch_epoch()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.fixture
def as_a_cuda_run():
    """The process settings a CUDA run holds (the run driver makes them; a Trainer does not)."""
    with process_settings(ProcessSettings.for_run(None, torch.device("cuda"))):
        yield


@pytest.mark.gpu
def test_launching_an_epoch_never_syncs_the_host(as_a_cuda_run):
    if not torch.cuda.is_available():
        pytest.fail("the gpu marker needs a CUDA device (make test-gpu runs on the device machine)")
    device = torch.device("cuda")
    cfg = RunConfig(task="synth-images", seed=0, epochs=14, telemetry_level="off", progress=False, device="cuda")
    # Any shadow gain and contribution pass G2 and G5: the test is about syncs, not about this seed's worth.
    lifecycle = LifecycleConfig.for_horizon(14, min_training_improvement=-1.0, min_fossilize_contribution=0.0)
    trainer = Trainer(cfg, load_data(cfg, device), device, lifecycle_config=lifecycle,
                      decider=germinate_then_fossilize, measure_fossils=True)
    seen: set[Stage] = set()
    while trainer.epoch < trainer.epochs:
        seen.add(trainer.state.slot("late").stage)
        pending = trainer.collect_epoch(launch_without_sync(trainer))
        trainer.finish_epoch(pending, *trainer.decide(pending))
    assert {Stage.DORMANT, Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY} <= seen, f"only saw {seen}"
