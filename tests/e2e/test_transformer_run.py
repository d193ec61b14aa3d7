"""The transformer host trains on synth-stories (CPU, `tiny` host) with a seed germinated, trained
in isolation and blended in: the lifecycle mechanics on the text topology, end to end."""

import math

import torch

from esper.core import heuristic
from esper.core.actions import FactoredAction
from esper.core.config import LifecycleConfig
from esper.core.stages import Stage
from esper.shell.driver import load_data
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer


def germinate_lora_in_mid_at_epoch_1(state, view: heuristic.DecisionView, cfg):
    """A scripted controller: LoRA into `mid` at the first boundary, then WAIT."""
    if view.epoch == 1:
        return state, FactoredAction.germinate(1, view.blueprint_names.index("lora"), 0), "scripted"
    return state, FactoredAction.wait(), "scripted"


def test_tiny_transformer_grows_a_seed_on_synth_stories():
    cfg = RunConfig(task="synth-stories", host="tiny", epochs=5, train_batches=6, val_size=32, controller="static")
    # Only G2's age and shadow-gain thresholds are relaxed: this test is about mechanics, not usefulness.
    lifecycle_config = LifecycleConfig.for_horizon(5, min_training_improvement=-1.0, min_training_epochs=1)
    trainer = Trainer(cfg, load_data(cfg, torch.device("cpu")), torch.device("cpu"),
                      controller=germinate_lora_in_mid_at_epoch_1, lifecycle_config=lifecycle_config)
    first = trainer.run_epoch()
    while trainer.epoch < trainer.epochs:
        trainer.run_epoch()
    assert first.action.op.name == "GERMINATE"
    history = [stage for stage, _ in trainer.state.slot("mid").seed.history]
    assert history[:3] == [Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING]
    mid = trainer.model.slot("mid")
    assert mid.blueprint == "lora" and 0.0 < float(mid.alpha) <= 1.0
    assert math.isfinite(trainer.history[-1][2]) and trainer.history[-1][2] < math.log(256)
