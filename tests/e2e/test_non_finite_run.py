"""A run whose final metrics are not finite never ends "ok" (docs/runtime.md §3.2, §4.6, §6.4): an lr
so large that every loss is NaN, over fewer epochs than the governor's rollbacks, ends with status
`diverged` in summary.json and run.end (valid against the schema), no final checkpoint, exit 1."""

import json

import pytest

from esper.core.events import RunEnded
from esper.shell.cli import main
from esper.shell.telemetry.schema import load_schema, validate

TINY = ["--train-size", "256", "--val-size", "64", "--batch-size", "64", "--no-progress", "--no-report"]


def test_nan_losses_end_diverged_with_exit_1(tmp_path, capsys):
    out = tmp_path / "run"
    # 2 epochs: each NaN epoch is a governor rollback (3 allowed), so the run reaches its end.
    assert main(["train", "--epochs", "2", "--host-lr", "1e30", "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged" in err[0] and "val_loss=nan" in err[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["epochs"] == 2
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    end = records[-1]
    assert end["event"] == "run.end" and end["fields"]["status"] == "diverged"
    assert validate(end, load_schema()) == []
    assert validate({**end, "fields": {**end["fields"], "status": "fine"}}, load_schema())  # a closed set
    assert not (out / "checkpoints" / "final.pt").exists() and (out / "error.txt").exists()


def test_the_status_is_one_of_the_known_ones():
    with pytest.raises(ValueError, match="status"):
        RunEnded(status="fine", epochs=0, final_val_acc=None, final_val_loss=None, best_val_acc=None,
                 best_val_loss=None, best_epoch=None, params=0, seed_params=0, seeds_germinated=0,
                 seeds_fossilized=0, seeds_culled=0, rollbacks=0, wall_s=0.0)


def test_a_nan_loss_without_the_governor_stops_the_run_as_diverged_not_a_crash(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--host-lr", "1e30", "--no-governor", "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("esper-run: training diverged") and "--no-governor" in err[0]
    assert json.loads((out / "summary.json").read_text())["status"] != "ok"
    kinds = [json.loads(line)["event"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert kinds[-1] == "run.end" and "governor.abort" not in kinds
