"""The run directory: refuses to clobber, atomic results files, metrics.csv with a fixed header."""

import csv
import json
import os
import re

import pytest
from telemetry_samples import epoch_metrics, slots

from esper.core.summary import RunSummary, SeedRecord
from esper.shell.telemetry import RunDirectory, RunDirectoryError, atomic_write_json, make_run_id
from esper.shell.telemetry import rundir as rundir_module
from esper.shell.telemetry.rundir import clear_for_a_fresh_start, locked, never_checkpointed


def summary() -> RunSummary:
    seeds = (
        SeedRecord(seed_id="late#1", slot="late", blueprint="conv_light", germinated_epoch=5, end_epoch=20,
                   fate="fossilized", stage="FOSSILIZED", contribution=0.0123, n_params=9280),
        SeedRecord(seed_id="mid#2", slot="mid", blueprint="norm", germinated_epoch=22, end_epoch=30,
                   fate="culled", stage="CULLED", contribution=-0.004, n_params=33,
                   cull_reason="negative_contribution"),
    )
    return RunSummary(run_id="r", status="ok", task="synth-images", controller="heuristic", seed=0, epochs=40,
                      final_val_acc=0.613, best_val_acc=0.62, best_epoch=38, host_params=6418,
                      seed_params=9280, wall_s=212.0, data_source={"preset": "synth-images"},
                      dropped={"tensorboard": 0}, seeds=seeds, final_val_loss=1.05)


def test_layout_and_refusal_to_overwrite(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert run.checkpoints.is_dir()
    RunDirectory(tmp_path / "run")  # only an empty checkpoints/ in it: nothing to lose
    (run.path / "metrics.csv").write_text("x\n")
    with pytest.raises(RunDirectoryError, match="--resume"):
        RunDirectory(run.path)
    assert RunDirectory(run.path, resume=True).path == run.path
    with pytest.raises(RunDirectoryError, match="cannot resume"):
        RunDirectory(tmp_path / "missing", resume=True)
    (tmp_path / "empty").mkdir()
    RunDirectory(tmp_path / "empty")  # an existing empty directory is fine


def test_config_and_summary_are_written_atomically(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.write_config({"task": "synth-images", "lr": 1 / 3, "nan": float("nan")})
    assert run.read_config() == {"task": "synth-images", "lr": 1 / 3, "nan": "nan"}  # floats exact
    run.write_summary(summary())
    assert run.read_summary() == summary()
    on_disk = json.loads(run.summary_path.read_text())
    assert on_disk["total_params"] == 6418 + 9280 and on_disk["seeds"][1]["fate"] == "culled"
    assert not [p for p in run.path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_crash_during_replace_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_json(target, {"version": 1})

    def crash(*args: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(rundir_module.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        atomic_write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["summary.json"]


def test_metrics_csv_header_is_fixed_by_the_first_row(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.append_metrics(epoch_metrics(1))
    run.append_metrics(epoch_metrics(2, rollback=True, val_acc=float("nan")), env=3)
    run.close()
    with open(run.metrics_path, newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[:15] == list(rundir_module.METRICS_COLUMNS)
    per_slot = ("stage", "blueprint", "alpha", "contrib")
    assert header[15:] == [f"{s.slot}_{c}" for s in slots() for c in per_slot]
    assert rows[0]["late_stage"] == "BLENDING" and rows[0]["late_alpha"] == "0.6"
    assert rows[0]["early_blueprint"] == "" and rows[0]["mid_contrib"] == "0.004"
    assert (rows[1]["env"], rows[1]["rollback"], rows[1]["val_acc"]) == ("3", "1", "nan")
    # Resuming keeps the header and appends; a row the header cannot hold is refused.
    again = RunDirectory(run.path, resume=True)
    again.append_metrics(epoch_metrics(3, slots=slots()[:1]))  # fewer slots: blanks
    with pytest.raises(ValueError, match="not in the header"):
        again.append_metrics(epoch_metrics(4, slots=(*slots(), slots()[0].__class__(
            slot="extra", stage=slots()[0].stage))))
    again.close()
    lines = run.metrics_path.read_text().splitlines()
    assert len(lines) == 4 and lines[0].count("epoch") == 2  # header once: epoch, epoch_s


def test_run_id_format():
    assert re.fullmatch(r"synth-images-heuristic-s0-\d{8}T\d{6}Z-[0-9a-f]{4}",
                        make_run_id("synth-images", "heuristic", 0))


def test_a_second_writer_is_refused_and_the_lock_is_not_content(tmp_path):
    path = tmp_path / "run"
    with locked(path):
        with pytest.raises(RunDirectoryError, match="in use by another run"), locked(path):
            pass
        RunDirectory(path)  # the lock file alone is nothing to lose
    with locked(path):  # released at the end of the block: taken again
        pass


def test_only_a_start_that_never_checkpointed_may_start_afresh(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.write_config({"run_id": "r"})
    (run.path / "metrics.csv").write_text("epoch\n1\n")
    (run.path / ".lock").touch()
    assert never_checkpointed(run.path)
    run.write_summary(summary())  # status "ok": a finished run's results
    assert not never_checkpointed(run.path)
    run.summary_path.write_text(json.dumps({"status": "interrupted"}))  # Ctrl-C before any checkpoint
    assert never_checkpointed(run.path)
    (run.checkpoints / "epoch-0001.pt").write_bytes(b"x")
    assert not never_checkpointed(run.path)  # something to resume
    (run.checkpoints / "epoch-0001.pt").unlink()
    (run.path / "notes.txt").write_text("the user's")
    assert not never_checkpointed(run.path)  # not only what a run writes
    (run.path / "notes.txt").unlink()
    clear_for_a_fresh_start(run.path)
    assert [p.name for p in run.path.iterdir()] == [".lock"]
    assert not never_checkpointed(tmp_path / "missing") and not never_checkpointed(run.path)
