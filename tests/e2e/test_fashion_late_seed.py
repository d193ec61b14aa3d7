"""Regression, end to end: on fashion-mnist a conv_light seed in the `late` slot (32 channels at 3×3)
made the next epoch's backward segfault. Cause: torch's CPU GroupNorm backward on a channels-last
input that does not require grad (the seed's detached host activation); blueprints.GroupNorm hands
it a contiguous input. The unit regression is in tests/shell/nets/test_blueprints.py; this runs the
trainer's sequence in a subprocess so a crash is a failure, not a dead test session."""

import subprocess
import sys

import pytest

SCRIPT = """
import torch
from esper.core.actions import FactoredAction
from esper.shell.driver import load_data
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer

def controller(state, view, cfg):
    if view.epoch == 1:
        return state, FactoredAction.germinate(2, view.blueprint_names.index("conv_light"), 1), "x"
    return state, FactoredAction.wait(), "x"

cfg = RunConfig(task="fashion-mnist", epochs=3, train_size=8192, val_size=1024)
trainer = Trainer(cfg, load_data(cfg, torch.device("cpu")), torch.device("cpu"), controller=controller)
for _ in range(3):
    trainer.run_epoch()
"""


@pytest.mark.slow
def test_conv_light_in_the_late_fashion_slot_trains():
    pytest.importorskip("esper.shell.data.fashion_mnist")
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    if "not found" in result.stderr:
        pytest.skip("fashion-mnist data not installed (apt-get install dataset-fashion-mnist)")
    assert result.returncode == 0, result.stderr[-2000:]
