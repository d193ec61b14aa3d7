"""The trainer applies the run's lr schedule (esper.core.lr_schedule) to every optimizer group:
host and fossils at preset lr × s(e), seeds at seed lr × stage scale × s(e); `--lr-schedule`
overrides the preset's (every preset says constant)."""

import pytest
import torch

from esper.core.actions import FactoredAction
from esper.core.lr_schedule import lr_factor
from esper.core.tasks import TASKS
from esper.shell.data.loading import load_task
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer

LATE = 2


@pytest.fixture(scope="module")
def data():
    return load_task("synth-images", device="cpu", train_size=256, val_size=128)


def germinate_at_first_boundary(trainer: Trainer, pending):
    if pending.epoch == 1:
        return FactoredAction.germinate(LATE, trainer.rules.catalogue.germinable_index("conv_light")), "test", []
    return FactoredAction.wait(), "test", []


def _lrs_per_epoch(trainer: Trainer) -> list[dict[str, float]]:
    seen = []
    while trainer.epoch < trainer.epochs:
        trainer.run_epoch()  # the groups keep the lr this epoch trained at until the next launch
        seen.append({g["name"]: g["lr"] for g in trainer.optimizer.param_groups})
    return seen


def test_presets_keep_the_lr_constant():
    assert {task.lr_schedule for task in TASKS.values()} == {"constant"}


def test_the_cosine_decays_host_and_seed_lr(data):
    trainer = Trainer(RunConfig(epochs=5, batch_size=64, lr_schedule="cosine"), data, torch.device("cpu"),
                      decider=germinate_at_first_boundary)
    seen = _lrs_per_epoch(trainer)
    host_lr, seed_lr = trainer.base_lr
    stage_scale = trainer.lifecycle_cfg.stage_lr_scale[0]  # the seed stays in TRAINING (G2 needs 3 epochs)
    for epoch, lrs in enumerate(seen):
        assert lrs["host"] == pytest.approx(host_lr * lr_factor("cosine", epoch, 5))
    for epoch, lrs in enumerate(seen[2:], start=2):  # the seed trains from the second epoch on
        assert lrs["seed:late"] == pytest.approx(seed_lr * stage_scale * lr_factor("cosine", epoch, 5))
    assert seen[-1]["host"] < seen[0]["host"]


def test_by_default_the_lr_stays_constant(data):
    trainer = Trainer(RunConfig(epochs=3, batch_size=64, controller="static"), data, torch.device("cpu"))
    assert [lrs["host"] for lrs in _lrs_per_epoch(trainer)] == [trainer.base_lr[0]] * 3
