"""Console: plain one-line-per-epoch logs off a TTY, a live display on one, and the final summary."""

import io

from rich.console import Console
from telemetry_samples import epoch_metrics, sample_events

from esper.core import codec
from esper.core import events as ev
from esper.core.diag_events import DiagIsolation
from esper.core.stages import Stage
from esper.core.summary import RunSummary, SeedRecord
from esper.shell.telemetry import ConsoleBackend, TelemetryHub, done_line, epoch_line, print_summary

SPEC_EPOCH_LINE = ("epoch 12/30  train 1.234 56.1%  val 1.301 54.0%  params 6,418+9,280  "
                   "late:BLENDING α0.60 +1.2pp  WAIT(awaiting_gate)  3.1s")


def test_epoch_line_matches_the_spec_example():
    slots = (ev.SlotStatus(slot="early", stage=Stage.DORMANT),
             ev.SlotStatus(slot="late", stage=Stage.BLENDING, blueprint="conv_light", alpha=0.6,
                           contribution=0.012))
    assert epoch_line(epoch_metrics(slots=slots), 30) == SPEC_EPOCH_LINE


def start(epochs: int = 3) -> ev.RunStarted:
    return ev.RunStarted(task="synth-images", controller="heuristic", seed=0, epochs=epochs, device="cpu",
                         precision="fp32", host_params=6418)


def run_events(n_epochs: int = 3) -> list[ev.Event]:
    events: list[ev.Event] = [start(n_epochs)]
    for epoch in range(1, n_epochs + 1):
        events.append(epoch_metrics(epoch))
    events.insert(2, sample_events()[0])  # a germination between epochs 1 and 2
    return events


def test_plain_log_without_a_tty_has_one_line_per_epoch():
    out = io.StringIO()
    with TelemetryHub("r", level="normal", backends=[ConsoleBackend(file=out)]) as hub:
        hub.emit_all(run_events())
    text = out.getvalue()
    lines = text.splitlines()
    assert "\x1b[" not in text  # no escape codes in a log file
    assert lines[0].startswith("run: synth-images, controller heuristic, seed 0, 3 epochs on cpu")
    assert [line.split("  ")[0] for line in lines if line.startswith("epoch ") and "train" in line] == [
        "epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "epoch 5  late: germinated late#1 conv_light (9,280 params, tempo 5)" in lines


def test_minimal_level_shows_lifecycle_but_no_epoch_lines():
    out = io.StringIO()
    with TelemetryHub("r", level="minimal", backends=[ConsoleBackend(file=out)]) as hub:
        hub.emit_all(run_events())
    assert "train" not in out.getvalue() and "germinated late#1" in out.getvalue()


def test_every_event_kind_renders(samples):
    out = io.StringIO()
    with TelemetryHub("r", level="debug", profile="research", backends=[ConsoleBackend(file=out)]) as hub:
        hub.emit_all(samples)
        assert hub.detached == {}
    # run.end and telemetry.warning are silent; so are the diagnostic measurements (JSONL and TensorBoard
    # carry them), and an isolation report without a violation
    silent = {"run.end", "telemetry.warning", "diag.gradients", "diag.weights", "diag.sharpness", "diag.per_class",
              "diag.confusion", "diag.activations", "diag.isolation"}
    assert len(out.getvalue().splitlines()) == len([e for e in samples if e.kind not in silent])


def test_an_isolation_violation_is_shown():
    out = io.StringIO()
    with TelemetryHub("r", level="normal", profile="diagnostic", backends=[ConsoleBackend(file=out)]) as hub:
        hub.emit(DiagIsolation(epoch=3, batches=8, violations={"mid": 0}), epoch=3)
        hub.emit(DiagIsolation(epoch=4, batches=8, violations={"mid": 5}), epoch=4)
    assert out.getvalue().splitlines() == ['epoch 4  diag.isolation batches=8 violations={"mid": 5}']


def test_live_display_on_a_terminal():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    backend = ConsoleBackend(console=console)
    with TelemetryHub("r", level="normal", backends=[backend]) as hub:
        hub.emit(start(3))
        assert hub.flush(timeout=5)
        for epoch in range(1, 4):
            for batch in range(0, 60, 10):
                backend.set_batch_progress(batch, 60)
            hub.emit(epoch_metrics(epoch))
        hub.emit(sample_events()[9])  # run.end stops the display
        assert hub.detached == {}
    assert "epoch 3/3" in out.getvalue()


def test_done_line_and_summary_table():
    seeds = (
        SeedRecord(seed_id="late#1", slot="late", blueprint="conv_light", germinated_epoch=5, end_epoch=20,
                   fate="fossilized", stage="FOSSILIZED", contribution=0.012, n_params=9280),
        SeedRecord(seed_id="mid#2", slot="mid", blueprint="norm", germinated_epoch=22, end_epoch=30,
                   fate="culled", stage="CULLED", contribution=-0.004, n_params=33, cull_reason="action"),
    )
    summary = RunSummary(run_id="r", status="ok", task="synth-images", controller="heuristic", seed=0,
                         epochs=50, final_val_acc=0.613, best_val_acc=0.62, best_epoch=44, host_params=6418,
                         seed_params=9280, wall_s=212.3, seeds=seeds, dropped={"console": 0})
    assert done_line(summary, "runs/x") == (
        "done: val 61.3% (best 62.0% @44)  params 15,698  fossilized 1 culled 1  212s → runs/x")
    dropped = codec.decode(RunSummary, {**codec.encode(summary), "dropped": {"tensorboard": 7}, "status": "aborted"})
    assert done_line(dropped).startswith("[aborted]  done:") and "telemetry dropped tensorboard 7" in \
        done_line(dropped)
    out = io.StringIO()
    print_summary(summary, "runs/x", console=Console(file=out, width=120))
    text = out.getvalue()
    assert "late#1" in text and "culled (action)" in text and text.rstrip().endswith("→ runs/x")
