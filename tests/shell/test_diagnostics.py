"""Profiles that compute (docs/runtime.md §4.4–§4.5): what each profile's run writes, and the diagnostics'
numbers — per-class accuracy against val_acc, sharpness's determinism, the budget's skips, isolation."""

import csv
import json

import attrs
import pytest
import torch

from esper.core.actions import FactoredAction
from esper.core.diag_events import DiagIsolation, DiagSharpness, DiagSkipped
from esper.shell import model as model_module
from esper.shell.cli import main
from esper.shell.diag_measures import LayerGrads, probe_subset, sharpness
from esper.shell.diagnostics import ACTIVATIONS, SHARPNESS, Budget
from esper.shell.driver import load_data
from esper.shell.run_config import RunConfig
from esper.shell.telemetry.schema import load_schema, validate
from esper.shell.trainer import STREAM_DIAG, Trainer, _generator

SMALL = ["--train-size", "256", "--val-size", "128", "--batch-size", "64", "--no-progress"]
CPU = torch.device("cpu")
DIAGNOSTIC_KINDS = {"diag.gradients", "diag.weights", "diag.sharpness", "diag.per_class", "diag.activations",
                    "diag.isolation"}


def run_records(tmp_path, profile: str, *extra: str) -> list[dict]:
    out = tmp_path / profile
    args = ["train", "--epochs", "2", "--out", str(out), "--profile", profile, "--controller", "static",
            "--static-seeds", "late:conv_light"]
    assert main([*args, *SMALL, *extra]) == 0
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def diag_kinds(records: list[dict]) -> set[str]:
    return {r["event"] for r in records if r["event"].startswith("diag.")}


@pytest.fixture(scope="module")
def research(tmp_path_factory) -> list[dict]:
    return run_records(tmp_path_factory.mktemp("research"), "research")


def test_a_diagnostic_run_writes_every_diagnostic_and_each_validates(tmp_path):
    records = run_records(tmp_path, "diagnostic")
    assert diag_kinds(records) == DIAGNOSTIC_KINDS
    schema = load_schema()
    assert [validate(r, schema) for r in records if r["event"].startswith("diag.")] == [[]] * sum(
        r["event"].startswith("diag.") for r in records)
    first = {r["event"]: r["fields"] for r in records if r["epoch"] == 1}
    assert first["diag.gradients"]["layers"] and set(first["diag.gradients"]["groups"]) == {"host"}
    assert "seed:late.conv" in "".join(first["diag.weights"]["layers"])  # the fossil's layers, renamed
    activation = first["diag.activations"]["slots"]
    assert [a["slot"] for a in activation] == ["late"] and activation[0]["alpha"] == 1.0
    assert activation[0]["ratio"] == pytest.approx(activation[0]["delta_rms"] / activation[0]["host_rms"], rel=1e-5)
    assert first["diag.sharpness"]["directions"] == 2
    assert first["diag.isolation"] == {"epoch": 1, "batches": 4, "violations": {}}  # a fossil reads h by design


def test_research_adds_the_confusion_matrix_and_four_directions(research):
    assert diag_kinds(research) == DIAGNOSTIC_KINDS | {"diag.confusion"}
    sharp = [r["fields"] for r in research if r["event"] == "diag.sharpness"]
    assert sharp and all(s["directions"] == 4 for s in sharp)
    assert all(validate(r, load_schema()) == [] for r in research)


def test_per_class_accuracy_and_the_confusion_matrix_agree_with_val_acc(research):
    for epoch in (1, 2):
        fields = {r["event"]: r["fields"] for r in research if r["epoch"] == epoch}
        matrix = fields["diag.confusion"]["matrix"]
        total = sum(map(sum, matrix))
        assert total == 128
        val_acc = fields["epoch.metrics"]["val_acc"]
        assert sum(matrix[c][c] for c in range(len(matrix))) / total == pytest.approx(val_acc, abs=1e-6)
        per_class = fields["diag.per_class"]["accuracy"]
        weighted = sum(acc * sum(row) for acc, row in zip(per_class, matrix, strict=True) if sum(row))
        assert weighted / total == pytest.approx(val_acc, abs=1e-5)


def test_minimal_computes_nothing_and_standard_only_the_group_norms(tmp_path):
    assert diag_kinds(run_records(tmp_path, "minimal", "--telemetry-level", "debug")) == set()
    standard = run_records(tmp_path, "standard", "--telemetry-level", "debug")
    assert diag_kinds(standard) == {"diag.gradients"}
    grads = [r["fields"] for r in standard if r["event"] == "diag.gradients"]
    assert len(grads) == 2 and all(g["layers"] == {} and g["groups"]["host"] > 0 for g in grads)


def small_trainer(profile: str = "diagnostic", level: str = "normal", **over) -> Trainer:
    cfg = RunConfig(task="synth-images", seed=0, epochs=3, train_size=128, val_size=64, batch_size=32,
                    device="cpu", profile=profile, telemetry_level=level, progress=False, **over)
    return Trainer(cfg, load_data(cfg, CPU), CPU)


def test_sharpness_is_deterministic_for_a_seed_and_leaves_the_weights_alone():
    trainer = small_trainer(controller="static", static_seeds=("late:conv_light",))
    x, y = probe_subset(trainer.data)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    values = [sharpness(trainer.model, x, y, _generator(0, STREAM_DIAG, CPU), 2, None).item() for _ in range(2)]
    other = sharpness(trainer.model, x, y, _generator(1, STREAM_DIAG, CPU), 2, None).item()
    assert values[0] == values[1] and values[0] != other
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.model.training  # the probe's eval mode was undone


def test_a_diagnostic_over_its_budget_is_skipped_and_reported():
    trainer = small_trainer(level="debug")
    diagnostics = trainer.diagnostics
    diagnostics.budget.costs = {ACTIVATIONS: 1e6, SHARPNESS: 1e6}  # measured before: far over any budget
    events = diagnostics.collect(1, trainer.model, {"batches": 4}, train_s=2.0)
    assert not any(isinstance(e, DiagSharpness) for e in events)
    assert [e for e in events if isinstance(e, DiagSkipped)] == [
        DiagSkipped(epoch=1, name=name, expected_s=1e6, budget_s=0.2) for name in (ACTIVATIONS, SHARPNESS)]


def test_the_budget_rule():
    budget = Budget(0.1)
    assert budget.admits("x", 0.0)  # no cost yet: runs once while the share is > 0
    assert not Budget(0.0).admits("x", 10.0)
    budget.charge("x", 0.3)
    assert budget.admits("x", 0.6) and not budget.admits("x", 0.5)  # 0.3 spent + 0.3 expected


def germinate_late(trainer: Trainer, pending) -> tuple[FactoredAction, str, list]:
    if pending.epoch > 1:
        return FactoredAction.wait(), "wait", []
    rules = trainer.rules
    action = FactoredAction.germinate(pending.view.slot("late").index, rules.catalogue.germinable_index("conv_light"))
    return action, "test", []


def isolation_counts(trainer: Trainer) -> list[DiagIsolation]:
    trainer.decider = germinate_late
    results = [trainer.run_epoch() for _ in range(2)]
    return [e for r in results for e in r.events if isinstance(e, DiagIsolation)]


def test_an_isolated_seed_leaks_no_gradient_into_the_host():
    reports = isolation_counts(small_trainer())
    assert reports[0].violations == {}  # no seed during epoch 1
    assert reports[1].violations == {"late": 0} and reports[1].batches == 4


def test_a_seed_reading_h_undetached_is_counted_every_batch(monkeypatch):
    monkeypatch.setattr(model_module, "seed_input", lambda h, input_grad: h)  # the isolation bug
    reports = isolation_counts(small_trainer())
    # every batch but the first: the seed's zero-initialised output layer passes no input gradient until it steps
    assert reports[1].violations == {"late": reports[1].batches - 1} and reports[1].batches == 4


def test_diagnostics_state_rides_in_the_run_checkpoint():
    from esper.shell.run_checkpoint import restore_trainer, run_payload

    trainer = small_trainer()
    trainer.run_epoch()
    payload = run_payload(trainer, run_id="r", config={}, data_source={}, seq=0)
    resumed = small_trainer()
    restore_trainer(resumed, payload)
    assert resumed.diagnostics.budget.costs == trainer.diagnostics.budget.costs != {}
    assert torch.equal(resumed.diagnostics.generator.get_state(), trainer.diagnostics.generator.get_state())
    assert "diagnostics" not in run_payload(small_trainer("minimal"), run_id="r", config={}, data_source={}, seq=0)


def test_diagnostics_never_change_training_and_a_resume_stays_exact(tmp_path):
    """metrics.csv of a research run equals a minimal run's, and a research run cut and resumed
    equals the uninterrupted one (weights bitwise)."""
    from esper.shell.driver import train

    cfg = RunConfig(task="synth-images", seed=0, epochs=4, train_size=256, val_size=128, batch_size=64,
                    device="cpu", profile="research", progress=False, controller="static",
                    static_seeds=("late:conv_light",), checkpoint_every=1)
    train(cfg, out=str(tmp_path / "whole"))
    train(cfg, out=str(tmp_path / "cut"), stop_after=2)
    train(RunConfig(progress=False), resume=str(tmp_path / "cut"))
    train(attrs.evolve(cfg, profile="minimal"), out=str(tmp_path / "plain"))
    metrics = {name: [{k: v for k, v in row.items() if k != "epoch_s"}  # the one timing column
                      for row in csv.DictReader((tmp_path / name / "metrics.csv").open())]
               for name in ("whole", "cut", "plain")}
    assert metrics["whole"] == metrics["cut"] == metrics["plain"] and len(metrics["whole"]) == 4
    a, b = (torch.load(tmp_path / name / "checkpoints" / "final.pt", weights_only=True)["model"]["tensors"]
            for name in ("whole", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_layer_gradients_sum_each_tensor_and_skip_a_missing_gradient():
    model = small_trainer().model
    probe = LayerGrads(model)
    for p in probe.params:
        p.grad = torch.full_like(p, 2.0)
    probe.params[0].grad = None  # a tensor the batch did not reach
    probe.after_backward()
    probe.after_backward()
    expected = torch.tensor([0.0] + [2 * 4.0 * p.numel() for p in probe.params[1:]])
    assert torch.allclose(probe.sq, expected)
    per_layer = dict(zip(probe.names, probe.per_layer().tolist(), strict=True))
    conv = next(n for n in probe.names if n.endswith("blocks.1.conv"))
    assert per_layer[conv] == pytest.approx(sum(2 * 4.0 * p.numel() for n, p in model.named_parameters()
                                                 if n.rsplit(".", 1)[0].endswith("blocks.1.conv")))
