"""A SIGKILL of the writing process leaves events.jsonl parseable: every line whole but, at most, the last."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from esper.shell.telemetry import read_records
from esper.shell.telemetry.schema import load_schema, validate

CHILD = textwrap.dedent("""
    import sys
    from esper.core import events as ev
    from esper.core.stages import Stage
    from esper.shell.telemetry import JsonlBackend, TelemetryHub

    hub = TelemetryHub("killed-run", level="debug", backends=[JsonlBackend(sys.argv[1])])
    slots = tuple(ev.SlotStatus(slot=f"s{i}", stage=Stage.BLENDING, blueprint="conv_heavy" * 20,
                                alpha=0.5, contribution=0.01) for i in range(20))  # long lines
    epoch = 0
    while True:
        epoch += 1
        hub.emit(ev.EpochMetrics(epoch=epoch, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=0.5,
                                 params=1, seed_params=0, lr_host=0.01, action="WAIT", reason="x" * 300,
                                 epoch_s=0.1, samples_per_s=1.0, slots=slots))
        hub.emit(ev.SeedGerminated(slot="s0", seed_id=f"s0#{epoch}", blueprint="norm", tempo=5,
                                   curve="LINEAR", n_params=17, epoch=epoch))
""")


def wait_for_lines(path: Path, n: int, child: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.poll() is None, child.stderr.read() if child.stderr else "child exited"
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"child wrote fewer than {n} lines in {timeout}s")


def test_jsonl_survives_sigkill_mid_run(tmp_path):
    path = tmp_path / "events.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], env=env, stderr=subprocess.PIPE)
    try:
        wait_for_lines(path, 2000, child)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    data = path.read_bytes()
    # The kill may tear only the line being written (a write cut short at a page boundary): the last.
    whole = data[: data.rindex(b"\n") + 1]
    path.write_bytes(whole)
    records = list(read_records(path))  # raises on a torn or unparsable line
    assert len(records) >= 2000
    schema = load_schema()
    assert all(validate(r, schema) == [] for r in records[-50:])
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    germinations = [r["seq"] for r in records if r["event"] == "seed.germinated"]
    assert germinations == list(range(1, 2 * len(germinations), 2))  # never dropped: no gaps
