"""The hub: never blocks the producer, counts drops, detaches failing backends, stamps records."""

import io
import os

from telemetry_samples import RecordingBackend, epoch_metrics

from esper.core import events as ev
from esper.core.stages import Stage
from esper.shell.telemetry import JsonlBackend, TelemetryHub, read_records


def germinated(epoch: int) -> ev.SeedGerminated:
    return ev.SeedGerminated(slot="late", seed_id=f"late#{epoch}", blueprint="norm", tempo=5,
                             curve="LINEAR", n_params=65, epoch=epoch)


def test_blocked_backend_does_not_block_the_producer_and_drops_are_counted():
    slow = RecordingBackend("slow", blocked=True)
    hub = TelemetryHub("r", backends=[slow], queue_size=8)
    n = 500
    for epoch in range(n):
        hub.emit(epoch_metrics(epoch))
        if epoch % 100 == 0:
            hub.emit(germinated(epoch))  # lifecycle: bypasses the bound, never dropped
    # The producer is done while the backend is still stuck in its first record.
    assert slow.calls <= 1 and slow.records == []
    dropped = hub.dropped["slow"]
    assert n - 8 - 1 <= dropped <= n - 8
    hub.set_epoch(n)  # reports the drops once, as a never-dropped event
    hub.set_epoch(n + 1)  # nothing new dropped: no second report
    slow.release()
    assert hub.close() == {"slow": dropped}
    kinds = slow.kinds
    assert kinds.count("seed.germinated") == 5
    assert kinds.count("epoch.metrics") + dropped == n
    assert kinds.count("telemetry.dropped") == 1
    report = next(r.event for r in slow.records if r.kind == "telemetry.dropped")
    assert report.total == dropped and report.per_backend == {"slow": dropped}
    seqs = [r.seq for r in slow.records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[-1] - seqs[0] + 1 > len(seqs)  # drops show as seq gaps


def test_sleeping_backend_lags_while_the_producer_finishes_and_close_abandons_the_rest():
    slow = RecordingBackend("sleepy", sleep_s=0.2)
    hub = TelemetryHub("r", backends=[slow])
    for epoch in range(200):
        hub.emit(epoch_metrics(epoch))
    handled_when_producer_done = len(slow.records)
    assert handled_when_producer_done <= 5  # 200 events would take the backend 40 s
    drops = hub.close(timeout=0.3)
    assert drops["sleepy"] >= 150
    assert drops["sleepy"] + len(slow.records) in (199, 200)  # one may be mid-handle at the deadline


def test_a_raising_backend_is_detached_with_one_warning_and_the_others_keep_receiving():
    good, bad, err = RecordingBackend("good"), RecordingBackend("bad", fail_at=3), io.StringIO()
    hub = TelemetryHub("r", backends=[bad, good], stderr=err)
    for epoch in range(10):
        hub.emit(epoch_metrics(epoch))
    assert hub.flush(timeout=5)
    assert set(hub.detached) == {"bad"} and set(hub.backends) == {"good"}
    for epoch in range(10, 20):
        hub.emit(epoch_metrics(epoch))
    hub.close()
    assert bad.calls == 3 and len(bad.records) == 2 and bad.closed
    assert good.kinds.count("epoch.metrics") == 20
    warnings = [r.event for r in good.records if r.kind == "telemetry.warning"]
    assert len(warnings) == 1 and "'bad'" in warnings[0].message
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and "telemetry backend 'bad' failed" in lines[0] and "No space left" in lines[0]


def test_a_jsonl_backend_whose_file_was_closed_is_detached(tmp_path):
    jsonl, good, err = JsonlBackend(tmp_path / "e.jsonl"), RecordingBackend("good"), io.StringIO()
    hub = TelemetryHub("r", backends=[jsonl, good], stderr=err)
    hub.emit(epoch_metrics(1))
    assert hub.flush(timeout=5)
    # The descriptor goes bad under the backend (as after a forced unmount): writes fail EBADF.
    read_only = os.open(os.devnull, os.O_RDONLY)
    os.dup2(read_only, jsonl._fd)
    os.close(read_only)
    hub.emit(epoch_metrics(2))
    hub.emit(epoch_metrics(3))
    hub.close()
    assert len(err.getvalue().splitlines()) == 1 and "'jsonl:e.jsonl' failed" in err.getvalue()
    assert good.kinds == ["epoch.metrics"] * 3 + ["telemetry.warning"]
    assert [r["epoch"] for r in read_records(tmp_path / "e.jsonl")] == [1]


def test_flush_drains_every_mailbox_and_flushes_backends():
    a, b = RecordingBackend("a"), RecordingBackend("b")
    hub = TelemetryHub("r", backends=[a, b])
    for epoch in range(100):
        hub.emit(epoch_metrics(epoch))
    assert hub.flush(timeout=5)
    assert len(a.records) == len(b.records) == 100 and a.flushes == b.flushes == 1
    hub.close()
    assert a.closed and b.closed


def test_flush_times_out_on_a_stuck_backend():
    stuck = RecordingBackend("stuck", blocked=True)
    hub = TelemetryHub("r", backends=[stuck])
    hub.emit(epoch_metrics(1))
    assert hub.flush(timeout=0.05) is False
    stuck.release()
    assert hub.flush(timeout=5)
    hub.close()


def test_records_are_stamped_seq_time_epoch_env():
    rec = RecordingBackend()
    times = iter(range(1000, 2000))
    hub = TelemetryHub("run-x", env=3, backends=[rec], start_seq=41, clock=lambda: float(next(times)))
    hub.emit(ev.TelemetryWarning(source="t", message="no epoch yet"))
    hub.set_epoch(7)
    hub.emit(ev.TelemetryWarning(source="t", message="stamped with the current epoch"))
    hub.emit(germinated(5))  # the event's own epoch wins over the current one
    hub.emit(germinated(5), epoch=9, env=1)  # explicit arguments win over both
    hub.close()
    stamps = [(r.seq, r.epoch, r.env) for r in rec.records]
    assert stamps == [(41, None, 3), (42, 7, 3), (43, 5, 3), (44, 9, 1)]
    assert [r.time for r in rec.records] == [1000.0, 1001.0, 1002.0, 1003.0]
    assert rec.records[0].to_json()["time"] == "1970-01-01T00:16:40.000Z"
    assert hub.next_seq == 45


def test_two_hubs_share_nothing_and_close_is_idempotent():
    a, b = RecordingBackend("same-name"), RecordingBackend("same-name")
    hub_a, hub_b = TelemetryHub("a", backends=[a]), TelemetryHub("b", backends=[b])
    hub_a.emit(epoch_metrics(1))
    hub_b.emit(epoch_metrics(1))
    hub_b.emit(epoch_metrics(2))
    assert hub_a.close() == {"same-name": 0} == hub_a.close()
    hub_b.close()
    assert [r.run_id for r in a.records] == ["a"] and [r.seq for r in b.records] == [0, 1]
    assert hub_a.emit(epoch_metrics(3)) is None and len(a.records) == 1


def test_backend_names_are_made_unique():
    hub = TelemetryHub("r", backends=[RecordingBackend("x"), RecordingBackend("x")])
    assert list(hub.backends) == ["x", "x#2"]
    hub.close()


def test_lifecycle_events_are_never_dropped_even_with_a_tiny_queue():
    slow = RecordingBackend("slow", blocked=True)
    hub = TelemetryHub("r", backends=[slow], queue_size=1)
    for epoch in range(50):
        hub.emit(epoch_metrics(epoch))
        hub.emit(ev.StageChanged(slot="late", seed_id="late#1", from_stage=Stage.TRAINING,
                                 to_stage=Stage.BLENDING, reason="g2", epoch=epoch,
                                 previous_epochs_in_stage=3))
    slow.release()
    hub.close()
    assert slow.kinds.count("seed.stage_changed") == 50
