"""A NaN in training triggers exactly one governor rollback and the run still completes
(docs/runtime.md §3.2); a panic past max_rollbacks aborts with TrainingDiverged."""

import math

import pytest
import torch

from esper.core.events import GovernorRollback
from esper.core.lr_schedule import lr_factor
from esper.shell.data.loading import load_task
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer, TrainingDiverged


@pytest.fixture(scope="module")
def data():
    return load_task("synth-images", device="cpu", train_size=256, val_size=128)


def _poison(trainer: Trainer) -> None:
    """Make the next epoch's loss NaN: one host weight becomes NaN."""
    with torch.no_grad():
        next(trainer.model.host.parameters()).view(-1)[0] = float("nan")


def test_nan_loss_rolls_back_once_and_the_run_completes(data):
    trainer = Trainer(RunConfig(epochs=6, batch_size=64, controller="static"), data, torch.device("cpu"))
    for _ in range(3):
        trainer.run_epoch()
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    _poison(trainer)
    result = trainer.run_epoch()
    rollbacks = [e for e in result.events if isinstance(e, GovernorRollback)]
    assert result.rollback and len(rollbacks) == 1
    assert rollbacks[0].reason == "non_finite" and rollbacks[0].snapshot_epoch == 3
    assert trainer.lr_factor == 0.5  # and every later epoch trains at half its scheduled lr:
    restored = trainer.model.state_dict()
    assert all(torch.equal(good[k], restored[k]) for k in good), "rollback restores the last good weights"
    epoch = trainer.epoch
    trainer.run_epoch()
    scheduled = trainer.base_lr[0] * lr_factor(trainer.schedule, epoch, trainer.epochs)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * scheduled)
    while trainer.epoch < trainer.epochs:
        result = trainer.run_epoch()
        assert not result.rollback
    assert trainer.epoch == 6 and math.isfinite(result.val_loss)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_panics_past_max_rollbacks_abort(data):
    trainer = Trainer(RunConfig(epochs=8, batch_size=64, controller="static", max_rollbacks=1), data,
                      torch.device("cpu"))
    trainer.run_epoch()
    _poison(trainer)
    assert trainer.run_epoch().rollback
    _poison(trainer)
    with pytest.raises(TrainingDiverged, match="after 1 rollbacks"):
        trainer.run_epoch()
