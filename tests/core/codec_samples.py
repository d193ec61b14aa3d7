"""One representative value of every class that goes into a file, for the codec's format tests.

Imports only the classes (never the codec), so the same module built the expected records in
`tests/fixtures/codec_golden.json` with the hand-written `to_dict` methods the codec replaced:

    PYTHONPATH=<base checkout>:tests/core python -c "import codec_samples as s; s.write_golden()"
"""

import json
import math
from pathlib import Path
from typing import Any

import torch

from esper.core import events as ev
from esper.core.actions import ActionMasks, FactoredAction, Op
from esper.core.alpha import Curve
from esper.core.gates import Check
from esper.core.governor import GovernorConfig, GovernorState, Verdict, VerdictKind
from esper.core.heuristic import DecisionView, HeuristicConfig, HeuristicState, SlotView
from esper.core.running_stats import RunningStats
from esper.core.seed import LifecycleState, SeedState, SlotState
from esper.core.signals import EpochSignals, TrackerConfig, TrackerState
from esper.core.stages import Stage
from esper.core.stats import RunRecord, Summary, WelchResult
from esper.core.summary import RunSummary, SeedRecord
from esper.core.tasks import task_preset
from esper.shell.compare import WidthMatch
from esper.shell.data.source import DataSource, Normalisation, TokenizerInfo
from esper.shell.nets.hosts import host_config
from esper.shell.rl.anomaly import AnomalyState
from esper.shell.rl.update import Normalisers

GOLDEN = Path(__file__).parents[1] / "fixtures" / "codec_golden.json"
G, T, B, C, E = Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.CULLED, Stage.EMBARGOED


def blending_seed() -> SeedState:
    return SeedState(seed_id="late#2", slot_id="late", blueprint="norm", blueprint_index=3, dim=32,
                     n_params=64, tempo=5, curve=Curve.SIGMOID, stage=B, previous_stage=T,
                     epochs_in_stage=2, previous_epochs_in_stage=3, age=6, germinated_epoch=4,
                     acc_at_germination=0.5, acc_at_stage_start=0.625, ramp_step=2, alpha=0.25,
                     contribution=-0.0125, shadow_gain=0.03, grad_ratio=0.75,
                     history=((G, 4), (T, 5), (B, 8)))


def embargoed_seed() -> SeedState:
    return SeedState(seed_id="mid#0", slot_id="mid", blueprint="attention", blueprint_index=2, dim=16,
                     n_params=1234, tempo=3, curve=Curve.LINEAR, stage=E, previous_stage=C,
                     epochs_in_stage=1, previous_epochs_in_stage=1, age=5, germinated_epoch=1,
                     acc_at_germination=0.25, acc_at_stage_start=0.3, cull_reason="shadow_hurts",
                     seed_finite=False, history=((G, 1), (T, 2), (C, 4), (E, 5)))


def lifecycle_state() -> LifecycleState:
    return LifecycleState(topology="cnn", epoch=9, next_serial=3, val_acc=0.6875, slots=(
        SlotState(slot_id="early", index=0, dim=8, enabled=False),
        SlotState(slot_id="mid", index=1, dim=16, seed=embargoed_seed(), germinations=1, culls=1),
        SlotState(slot_id="late", index=2, dim=32, seed=blending_seed(), germinations=2)))


def tracker_state() -> TrackerState:
    return TrackerState(epoch=7, prev_loss=1.25, rel_ema=0.0125, stable_count=2, latched=True,
                        ref_acc=0.5, plateau_epochs=1, best_val_acc=0.5, best_val_loss=1.125,
                        loss_history=(1.5, 1.25), acc_history=(0.375, 0.5))


def decision_view() -> DecisionView:
    masks = ActionMasks(op=(True, True, False, True), slot=((True, True),) * 4,
                        blueprint=((True, False, True), (False, True, True)), tempo=(True, True, False))
    slots = (SlotView(slot_id="mid", index=0, stage=Stage.DORMANT),
             SlotView(slot_id="late", index=1, stage=T, blueprint="norm", epochs_in_stage=2, age=3,
                      shadow_gain=0.01, grad_ratio=0.5, total_gain=-0.0625))
    return DecisionView(epoch=4, horizon=20, topology="cnn", tracker=tracker_state(), masks=masks, slots=slots,
                        germinations=1, blueprint_names=("conv_light", "norm", "attention"), tempo_index=1,
                        min_span=9)


def data_source() -> DataSource:
    return DataSource(preset="synth-images", kind="procedural", id_or_path="synth-images/v1", fingerprint="ab",
                      sha256="cd", n_train=256, n_heldout=64, subset=True,
                      normalisation=Normalisation(mean=(0.4922, 0.5), std=(0.25, 0.2321)))


def run_summary() -> RunSummary:
    seeds = (SeedRecord(seed_id="late#0", slot="late", blueprint="conv_light", germinated_epoch=1, end_epoch=10,
                        fate="culled", stage="CULLED", contribution=0.015625, n_params=9280,
                        cull_reason="dependency_without_gain"),
             SeedRecord(seed_id="mid#1", slot="mid", blueprint="norm", germinated_epoch=11, end_epoch=None,
                        fate="live", stage="TRAINING", contribution=None, n_params=64))
    return RunSummary(run_id="r1", status="ok", task="synth-images", controller="heuristic", seed=0, epochs=14,
                      final_val_acc=0.078125, best_val_acc=0.140625, best_epoch=3, host_params=6418,
                      seed_params=64, wall_s=28.5, data_source={"preset": "synth-images", "subset": True},
                      dropped={"events.jsonl": 0}, seeds=seeds, final_val_loss=2.366, train_flops=123456789)


def stats() -> RunningStats:
    return RunningStats(mean=torch.tensor([0.5, -1.25]), var=torch.tensor([2.0, 0.125]), count=torch.tensor(6.0))


def events() -> dict[str, ev.Event]:
    check = Check(name="stage", value=Stage.TRAINING, threshold=0.5, passed=False, code="too_young")
    return {
        "event.StageChanged": ev.StageChanged(slot="late", seed_id="late#0", from_stage=T, to_stage=B,
                                              reason="G2", epoch=6, previous_epochs_in_stage=3),
        "event.GateEvaluated": ev.GateEvaluated(slot="late", seed_id=None, gate="G1", passed=False,
                                                reason="too_young", checks=(check,)),
        "event.SeedRetired": ev.SeedRetired(slot="mid", seed_id="mid#0", history=((G, 1), (C, 4)),
                                            cull_reason="shadow_hurts"),
        "event.EpochMetrics": ev.EpochMetrics(
            epoch=3, train_loss=2.25, train_acc=0.125, val_loss=2.5, val_acc=0.0625, params=10, seed_params=2,
            lr_host=0.01, action="WAIT", reason="too_late", epoch_s=1.5, samples_per_s=100.0,
            slots=(ev.SlotStatus(slot="late", stage=B, blueprint="norm", seed_id="late#0", alpha=0.5),)),
    }


def samples() -> dict[str, Any]:
    """Name → value; one per class (several events)."""
    return {
        "GovernorConfig": GovernorConfig.for_classes(10, window=12),
        "GovernorState": GovernorState(window=(2.25, 2.0, 1.875), consecutive=1, rollbacks=2),
        "Verdict": Verdict(kind=VerdictKind.ANOMALY, consecutive=2, mean=1.5, std=0.25, threshold=3.0),
        "HeuristicConfig": HeuristicConfig(cnn_rotation=("norm", "attention"), max_seeds=3, germination="early"),
        "HeuristicState": HeuristicState(topology="cnn", pointer=4, penalties=(("norm", 0.5), ("attention", 1.85)),
                                         live_seeds=(("late#3", "norm"),)),
        "SlotView": decision_view().slots[1],
        "DecisionView": decision_view(),
        "CNNHostConfig": host_config("cifar10", slots={"b1": 1, "b2": 2}),
        "TransformerHostConfig": host_config("tiny"),
        "RunningStats": stats(),
        "SeedState": blending_seed(),
        "SlotState": lifecycle_state().slots[1],
        "LifecycleState": lifecycle_state(),
        "TrackerConfig": TrackerConfig.for_topology("transformer"),
        "EpochSignals": EpochSignals(epoch=3, val_loss=2.5, val_acc=0.0625, train_loss=2.25, train_acc=0.125),
        "TrackerState": tracker_state(),
        "Summary": Summary(n=3, mean=0.5, std=0.125, min=0.375, max=0.625),
        "WelchResult": WelchResult(t=math.nan, df=math.nan, p=math.nan, diff=0.25, ci_low=math.nan,
                                   ci_high=math.nan, real=False, verdict="n < 2"),
        "RunRecord": RunRecord(group="static-param", seed=2, final_val_acc=0.75, best_val_acc=0.8, params=6418,
                               train_flops=10**12, wall_s=80.5, fossilized=1, culled=0, run_dir="runs/x"),
        "SeedRecord": run_summary().seeds[0],
        "RunSummary": run_summary(),
        "TaskPreset": task_preset("fashion-mnist"),
        "WidthMatch": WidthMatch(8, 6418.0, 6500.0, True),
        "Normalisation": Normalisation(mean=(0.286,), std=(0.353,)),
        "TokenizerInfo": TokenizerInfo(kind="bpe", vocab=512, sha256="ef", eos_id=0, path="/tmp/bpe.json"),
        "DataSource": data_source(),
        "AnomalyState": AnomalyState({"kl_spike": 2, "nonfinite": 0}),
        "Normalisers": Normalisers(stats(), RunningStats(mean=torch.tensor([0.125]), var=torch.tensor([4.0]),
                                                         count=torch.tensor(3.0))),
        "event.ActionRejected": ev.ActionRejected(action=FactoredAction(Op.GERMINATE, 1, 2, 0), reason="masked"),
        **events(),
    }


def write_golden() -> None:
    """The records the hand-written `to_dict` methods produced (run on the commit before the codec)."""
    text = {name: json.dumps(value.to_dict()) for name, value in samples().items()}
    GOLDEN.write_text(json.dumps(text, indent=1) + "\n", encoding="utf-8")
