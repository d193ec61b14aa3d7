"""Levels filter what is emitted and profiles what is computed (docs/runtime.md §4.4)."""

import pytest
from telemetry_samples import RecordingBackend, epoch_metrics

from esper.core import diag_events as dg
from esper.core import events as ev
from esper.core.wire import Level, Profile
from esper.shell.telemetry import JsonlBackend, RunDirectory, TelemetryHub, open_hub, read_records

MINIMAL_KINDS = {
    "seed.germinated", "seed.stage_changed", "seed.fossilized", "seed.culled", "seed.retired",
    "controller.action_rejected", "run.start", "run.resume", "run.end", "controller.input_missing",
    "governor.rollback", "governor.abort", "checkpoint.saved", "checkpoint.loaded",
    "telemetry.dropped", "telemetry.warning", "ppo.update", "rl.run_started", "rl.run_ended", "rl.rollout_done",
    "rl.env_truncated", "rl.anomaly",
}
NORMAL_KINDS = MINIMAL_KINDS | {
    "epoch.metrics", "seed.metrics", "seed.gate_evaluated", "host.stabilised", "host.destabilised",
    "governor.anomaly", "diag.gradients", "diag.sharpness", "diag.per_class", "diag.confusion",
    "diag.weights", "diag.activations", "diag.isolation",
}


def written_kinds(tmp_path, samples, level, profile=Profile.RESEARCH) -> list[str]:
    path = tmp_path / f"{level}.jsonl"
    rec = RecordingBackend()
    with TelemetryHub("r", level=level, profile=profile, backends=[JsonlBackend(path), rec]) as hub:
        hub.emit_all(samples)
    kinds = [r["event"] for r in read_records(path)] if path.stat().st_size else []
    assert kinds == rec.kinds  # every backend sees exactly the admitted events
    return kinds


@pytest.mark.parametrize(("level", "expected"), [
    (Level.MINIMAL, MINIMAL_KINDS), (Level.NORMAL, NORMAL_KINDS),
])
def test_an_event_below_the_level_is_never_written(tmp_path, samples, level, expected):
    kinds = written_kinds(tmp_path, samples, level)
    assert set(kinds) == expected
    assert kinds == [e.kind for e in samples if e.kind in expected]  # order kept


def test_debug_writes_everything_and_off_nothing(tmp_path, samples):
    assert written_kinds(tmp_path, samples, Level.DEBUG) == [e.kind for e in samples]
    assert written_kinds(tmp_path, samples, Level.OFF) == []


def gate(passed: bool) -> ev.GateEvaluated:
    return ev.GateEvaluated(slot="late", seed_id="late#1", gate="G2", passed=passed,
                            reason=None if passed else "too_young", checks=())


@pytest.mark.parametrize(("level", "seen"), [
    ("minimal", []), ("normal", [False]), ("debug", [True, False]),
])
def test_a_passing_gate_is_debug_a_failing_one_normal(level, seen):
    rec = RecordingBackend()
    with TelemetryHub("r", level=level, backends=[rec]) as hub:
        hub.emit(gate(True))
        hub.emit(gate(False))
    assert [r.event.passed for r in rec.records] == seen


DIAGS = {
    "diag.gradients": dg.DiagGradients(epoch=1, groups={"host": 0.1}),
    "diag.sharpness": dg.DiagSharpness(epoch=1, sharpness=0.01, directions=2, seconds=0.1),
    "diag.per_class": dg.DiagPerClass(epoch=1, accuracy=(0.5,)),
    "diag.confusion": dg.DiagConfusion(epoch=1, matrix=((1,),)),
    "diag.weights": dg.DiagWeights(epoch=1, layers={"host.head.fc": 1.0}),
    "diag.activations": dg.DiagActivations(epoch=1, slots=()),
    "diag.isolation": dg.DiagIsolation(epoch=1, batches=4, violations={}),
}


@pytest.mark.parametrize(("profile", "expected"), [
    ("minimal", set()),
    ("standard", {"diag.gradients"}),
    ("diagnostic", set(DIAGS) - {"diag.confusion"}),
    ("research", set(DIAGS)),
])
def test_profiles_select_diagnostics(profile, expected):
    rec = RecordingBackend()
    with TelemetryHub("r", level="normal", profile=profile, backends=[rec]) as hub:
        hub.emit_all(DIAGS.values())
        hub.emit(epoch_metrics())
        assert {k for k in DIAGS if hub.wants(k)} == expected
    assert set(rec.kinds) == expected | {"epoch.metrics"}


def test_a_diagnostic_the_level_would_drop_is_not_computed():
    hub = TelemetryHub("r", level="minimal", profile="research")
    assert not any(hub.wants(k) for k in DIAGS)
    assert not TelemetryHub("r", level="normal", profile="research").wants("diag.skipped")  # debug-level
    assert TelemetryHub("r", level="debug", profile="standard").wants("diag.skipped")
    assert Profile.parse("research").budget == 0.25 and Profile.MINIMAL.budget == 0.0


def test_level_off_opens_no_event_file(tmp_path):
    run = RunDirectory(tmp_path / "run")
    hub = open_hub("r", run, level="off", console=False)
    hub.emit(ev.RunEnded(status="ok", epochs=1, final_val_acc=0.5, final_val_loss=1.0, best_val_acc=0.5,
                         best_val_loss=1.0, best_epoch=1, params=1, seed_params=0, seeds_germinated=0,
                         seeds_fossilized=0, seeds_culled=0, rollbacks=0, wall_s=1.0))
    assert hub.close() == {}
    assert not run.events_path.exists()


def test_open_hub_writes_events_and_a_copy(tmp_path):
    run = RunDirectory(tmp_path / "run")
    copy = tmp_path / "all-runs.jsonl"
    hub = open_hub("r", run, level="minimal", console=False, events_copy=copy)
    hub.emit(epoch_metrics())  # normal: filtered at minimal
    hub.emit(ev.HostDestabilised(epoch=3, reason="structure_changed"))  # normal: filtered
    hub.emit(ev.GovernorAbort(epoch=3, reason="divergence", rollbacks=3))
    hub.close()
    for path in (run.events_path, copy):
        assert [r["event"] for r in read_records(path)] == ["governor.abort"]
