"""TensorBoard scalars are written and read back with tensorboard's own reader."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from telemetry_samples import epoch_metrics, sample_events

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from esper.shell.telemetry import TelemetryHub
from esper.shell.telemetry.tensorboard import TensorBoardBackend


def test_scalars_round_trip_through_event_files(tmp_path):
    log_dir = tmp_path / "tb"
    accs = [0.3, 0.45, 0.5]
    with TelemetryHub("r", level="normal", backends=[TensorBoardBackend(log_dir)]) as hub:
        for epoch, acc in enumerate(accs, start=1):
            hub.emit(epoch_metrics(epoch, val_acc=acc))
        hub.emit(sample_events()[12])  # seed.metrics
        hub.emit(sample_events()[23])  # ppo.update
        assert hub.detached == {}
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(log_dir))
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"val/acc", "train/loss", "alpha/late", "contribution/mid", "seed/late/grad_ratio",
            "ppo/approx_kl"} <= tags
    scalars = acc.Scalars("val/acc")
    assert [s.step for s in scalars] == [1, 2, 3]
    assert [s.value for s in scalars] == pytest.approx(accs)
    assert "val/ppl" not in tags and "contribution/early" not in tags  # None is not a scalar


def test_missing_extra_gives_one_clear_error():
    code = textwrap.dedent("""
        import sys
        sys.modules["tensorboard"] = None  # as if the extra were not installed
        try:
            import esper.shell.telemetry.tensorboard
        except ImportError as exc:
            print(exc)
        else:
            print("imported")
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == ("TensorBoard logging needs the 'tensorboard' extra: pip install "
                                  "'esper[tensorboard]' (or run without --tensorboard)")


def test_diagnostics_become_diag_scalars(tmp_path, samples):
    log_dir = tmp_path / "tb"
    with TelemetryHub("r", level="normal", profile="research", backends=[TensorBoardBackend(log_dir)]) as hub:
        hub.emit_all([e for e in samples if e.kind.startswith("diag.")])
        assert hub.detached == {}
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"diag/grad_rms/host", "diag/grad_rms/seed:late", "diag/grad_layer/conv0", "diag/sharpness",
            "diag/class_acc/0", "diag/weight_norm/seed:late.conv", "diag/activation/late/ratio",
            "diag/isolation_violations/late"} <= tags
    assert [(s.step, s.value) for s in acc.Scalars("diag/sharpness")] == [(7, pytest.approx(0.0321))]
