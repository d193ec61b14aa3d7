"""The epoch's numbers (esper/shell/epoch_numbers.py, fetch.py): the layout puts each slot's
counterfactuals at the variants it declares, one fetch reads every number back at its slot, and
the trainer's collect step reads the host only from that one copy."""

import math

import pytest
import torch

from esper.core.gates import gradient_ratio
from esper.core.measurements import MeasurementPlan, SlotPlan
from esper.shell.driver import load_data
from esper.shell.epoch import TrainSums, ValidationSums
from esper.shell.epoch_numbers import EpochLayout, LaunchedEpoch, VariantIndex
from esper.shell.fetch import fetch
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer

# early: every input; mid: only the finiteness check; late: only its shadow gain; extra: nothing.
PLAN = MeasurementPlan(slots=(
    SlotPlan(slot_id="early", contribution=True, shadow_gain=True, grad_ratio=True, finite=True),
    SlotPlan(slot_id="mid", finite=True),
    SlotPlan(slot_id="late", shadow_gain=True),
    SlotPlan(slot_id="extra"),
))


def test_the_layout_declares_each_slots_variants_in_plan_order():
    layout = EpochLayout.of(PLAN)
    assert layout.variants == ({}, {"early": 0.0}, {"early": 1.0}, {"late": 1.0})
    assert layout.index == {"early": VariantIndex(ablate=1, shadow=2), "mid": VariantIndex(),
                            "late": VariantIndex(shadow=3)}
    assert layout.measured == ("early", "mid")


def _launched(host_sq: float = 8.0) -> LaunchedEpoch:
    """Distinct numbers everywhere, so a number read from the wrong position changes a value."""
    train = TrainSums(loss=torch.tensor(12.0), correct=torch.tensor(6), count=torch.tensor(8.0),
                      host_sq=torch.tensor(host_sq), seed_sq={"early": torch.tensor(2.0), "mid": torch.tensor(5.0)})
    val = ValidationSums(loss=torch.tensor([4.0, 6.0, 3.0, 5.0]), correct=torch.tensor([2, 1, 3, 4]), count=4)
    finite = {"early": torch.tensor(True), "mid": torch.tensor(False)}
    return LaunchedEpoch(started=0.0, layout=EpochLayout.of(PLAN), train=train, finite=finite, val=val,
                         seed_params={"early": 50, "mid": 20}, host_params=200)


def test_one_fetch_reads_every_number_back_at_its_slot():
    numbers = _launched().fetch()
    assert (numbers.train_loss, numbers.train_acc, numbers.train_count) == (1.5, 0.75, 8.0)
    assert (numbers.val_loss, numbers.val_acc) == (1.0, 0.5)  # variant 0: the real model
    early, mid, late = numbers.slots  # `extra` measures nothing and is left out
    ratio, _ = gradient_ratio(torch.tensor(2.0), torch.tensor(8.0), 50, 200)
    assert early.slot_id == "early" and early.seed_finite
    assert early.contribution == 0.5 - 0.25 and early.shadow_gain == 0.75 - 0.5
    assert early.grad_ratio == pytest.approx(float(ratio)) and early.grad_ratio == pytest.approx(1.0)
    assert (mid.slot_id, mid.contribution, mid.shadow_gain, mid.grad_ratio, mid.seed_finite) == (
        "mid", None, None, None, False)  # its ratio was summed for the finite check, not asked for
    assert (late.slot_id, late.contribution, late.shadow_gain, late.grad_ratio, late.seed_finite) == (
        "late", None, 1.0 - 0.5, None, True)
    m = numbers.measurements(epoch=3)
    assert (m.epoch, m.val_acc, m.slots) == (3, 0.5, numbers.slots)


def test_a_vanished_host_gradient_leaves_the_ratio_missing():
    early = _launched(host_sq=0.0).fetch().slots[0]
    assert early.grad_ratio is None and early.seed_finite


def test_fetch_keeps_the_tree_and_each_leafs_shape():
    tree = {"a": (torch.tensor(1.5), torch.tensor([[1, 2], [3, 4]])), "b": torch.tensor([True, False]), "c": "kept"}
    assert fetch(tree) == {"a": (1.5, [[1.0, 2.0], [3.0, 4.0]]), "b": [1.0, 0.0], "c": "kept"}
    assert fetch(torch.tensor(0.1, dtype=torch.float64)) == 0.1  # float64 is not cut to float32


@pytest.fixture
def host_reads(monkeypatch):
    """Every host read of a tensor: (method, storage) — a sync on a GPU, whatever the device here."""
    reads: list[tuple[str, int]] = []
    for name in ("cpu", "tolist", "item", "numpy", "__float__", "__int__", "__bool__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            reads.append((_name, self.untyped_storage().data_ptr()))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def test_collecting_an_epoch_reads_the_host_from_one_copy(host_reads):
    cfg = RunConfig(task="synth-images", seed=0, epochs=2, train_size=128, val_size=64, batch_size=64,
                    controller="static", static_seeds=("late:conv_light",), device="cpu",
                    telemetry_level="off", progress=False)
    trainer = Trainer(cfg, load_data(cfg, torch.device("cpu")), torch.device("cpu"), measure_fossils=True)
    launched = trainer.launch_epoch()
    assert len(launched.layout.variants) == 2  # the fossil's ablation rides along
    host_reads.clear()
    pending = trainer.collect_epoch(launched)
    names = [name for name, _ in host_reads]
    assert set(names) <= {"cpu", "tolist"}, names  # no scalar reads (item, float, bool) on the side
    assert len({storage for _, storage in host_reads}) == 1  # every read comes from the one copy
    assert math.isfinite(pending.numbers.val_loss) and pending.numbers.slots[0].contribution is not None
