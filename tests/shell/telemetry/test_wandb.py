"""The Weights & Biases backend, in W&B's offline mode, read back with W&B's own reader
(`wandb leet inspect --json`: the records of a run's `.wandb` transaction log)."""

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from telemetry_samples import epoch_metrics, sample_events

pytest.importorskip("wandb")
pytest.importorskip("wandb.cli.leet", reason="reading a .wandb log back needs `wandb leet inspect` (newer W&B)")

from esper.core import diag_events as dg
from esper.core import events as ev
from esper.shell.cli import main
from esper.shell.telemetry import TelemetryHub
from esper.shell.telemetry import wandb as wandb_backend
from esper.shell.telemetry.wandb import WandbBackend

TINY = ["--train-size", "128", "--val-size", "64", "--batch-size", "64", "--no-progress", "--no-report",
        "--checkpoint-every", "1"]


def offline_env(home: Path) -> dict[str, str]:
    """Offline, quiet and hermetic: nothing leaves the machine and nothing is read from or written
    to the user's W&B settings and caches."""
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true",
            "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_CACHE_DIR": str(home / "cache"),
            "WANDB_DATA_DIR": str(home / "data")}


def use_offline_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    for name, value in offline_env(home).items():
        mp.setenv(name, value)
    for name in ("WANDB_DIR", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME"):
        mp.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path_factory, monkeypatch):
    use_offline_env(monkeypatch, tmp_path_factory.mktemp("wandb-home"))


def inspect(run_dir: Path, *flags: str) -> Any:
    """`wandb leet inspect --json [flags] RUN_DIR`: one JSON object, or one per record."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", *flags, str(run_dir)],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if flags else [json.loads(line) for line in out.stdout.splitlines()]


def history(run_dir: Path) -> list[dict[str, Any]]:
    return [r["history"]["item"] for r in inspect(run_dir) if r["type"] == "history"]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory) -> Path:
    """2 epochs, then `--resume` to 3: one esper run in two processes' worth of W&B offline runs."""
    out = tmp_path_factory.mktemp("runs") / "run"
    with pytest.MonkeyPatch.context() as mp:
        use_offline_env(mp, tmp_path_factory.mktemp("wandb-home"))
        assert main(["train", "--epochs", "2", "--wandb", "--wandb-project", "esper-test", "--out", str(out),
                     *TINY]) == 0
        assert main(["train", "--resume", str(out), "--epochs", "3"]) == 0
    return out


def offline_runs(run: Path) -> list[Path]:
    return sorted((run / "wandb").glob("offline-run-*"))


def test_history_is_metrics_csv_at_epoch_steps_across_a_resume(resumed_run):
    first, second = offline_runs(resumed_run)
    rows = list(csv.DictReader((resumed_run / "metrics.csv").open()))
    logged = history(first) + history(second)
    assert [h["_step"] for h in logged] == [h["epoch"] for h in logged] == [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for h, row in zip(logged, rows, strict=True):
        for name in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert h[name] == pytest.approx(float(row[name]), rel=1e-6), name  # the CSV keeps 7 digits
        assert h["params"] == int(row["params"]) and h["slot/late/alpha"] == float(row["late_alpha"])


def test_the_resume_appends_to_the_same_wandb_run_with_the_run_config(resumed_run):
    config = json.loads((resumed_run / "config.json").read_text())
    summaries = [inspect(path, "--summary") for path in offline_runs(resumed_run)]
    assert [s["run_id"] for s in summaries] == [config["run_id"]] * 2
    assert {s["project"] for s in summaries} == {"esper-test"}
    assert summaries[0]["config"] == config["config"]  # the resolved config, every table
    resumed = {**config["config"], "train": {**config["config"]["train"], "epochs": 3}}
    assert summaries[1]["config"] == resumed  # with what the resume changed


def test_run_end_is_the_summary_and_the_exit_code(resumed_run):
    done = inspect(offline_runs(resumed_run)[-1], "--summary")
    summary = json.loads((resumed_run / "summary.json").read_text())
    assert (done["state"], done["exit_code"]) == ("finished", 0)
    assert done["summary"]["status"] == "ok" and done["summary"]["epochs"] == 3
    assert done["summary"]["final_val_acc"] == pytest.approx(summary["final_val_acc"])


@pytest.mark.parametrize(("flag", "module", "extra"), [("--wandb", "wandb", "'wandb'"),
                                                       ("--tensorboard", "tensorboard", "'tensorboard'")])
def test_a_missing_extra_is_one_line_exit_2_and_nothing_written(flag, module, extra, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    if module == "tensorboard":  # torch's wrapper may already be imported (an earlier test): hide it too
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.delitem(sys.modules, f"esper.shell.telemetry.{module}", raising=False)
    out = tmp_path / "run"
    for command in (["train", "--epochs", "1"], ["compare", "--seeds", "2", "--epochs", "1"]):
        assert main([*command, flag, "--out", str(out), *TINY]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"needs the {extra} extra" in err and f"without {flag}" in err
        assert not out.exists()


class FakeRun:
    """What the backend calls on a W&B run, recorded (or failing on `log`)."""

    def __init__(self, fail: bool = False) -> None:
        self.logged: list[tuple[int, dict[str, Any]]] = []
        self.summary: dict[str, Any] = {}
        self.finished: int | None = None
        self.fail = fail

    def log(self, values: dict[str, Any], step: int) -> None:
        if self.fail:
            raise RuntimeError("W&B is down")
        self.logged.append((step, values))

    def mark_preempting(self) -> None:
        self.summary["preempting"] = True

    def finish(self, exit_code: int) -> None:
        self.finished = exit_code


def _of(kind: type) -> ev.Event:
    return next(e for e in sample_events() if isinstance(e, kind))


def test_steps_and_keys_of_each_event(monkeypatch):
    run = FakeRun()
    monkeypatch.setattr(wandb_backend.wandb, "init", lambda **kw: run)
    events = [epoch_metrics(12), _of(ev.SeedMetrics), _of(ev.PPOUpdate), _of(ev.RolloutDone), _of(dg.DiagGradients),
              _of(dg.DiagPerClass), _of(dg.DiagConfusion), _of(ev.SeedGerminated),
              attrs.evolve(_of(ev.RunEnded), status="interrupted")]
    with TelemetryHub("r", level="debug", profile="research", backends=[WandbBackend("r", project="p")]) as hub:
        for e in events:
            hub.emit(e)
        assert hub.detached == {}
    steps = {next(iter(values)).split("/")[0]: step for step, values in run.logged}
    logged = {k: v for _, values in run.logged for k, v in values.items()}
    ppo, rollout = _of(ev.PPOUpdate), _of(ev.RolloutDone)
    assert steps["ppo"] == ppo.update and steps["rollout"] == rollout.batch + 1 and steps["diag"] == 7
    assert [step for step, _ in run.logged][:2] == [12, 12]  # epoch.metrics and seed.metrics of epoch 12
    assert logged["val_acc"] == 0.54 and logged["slot/late/alpha"] == 0.6 and "slot/early/contribution" not in logged
    assert logged["seed/late/alpha"] == _of(ev.SeedMetrics).alpha and logged["ppo/approx_kl"] == ppo.approx_kl
    assert logged["ppo/heads/op/clip_frac"] == ppo.heads["op"]["clip_frac"]
    assert logged["rollout/final_acc/mean"] == 0.375 and "rollout/final_acc/1" not in logged  # per env: the mean
    assert logged["rollout/reward_components/pbrs"] == rollout.reward_components["pbrs"]
    assert logged["diag/gradients/groups/seed:late"] == 0.03
    assert [logged[f"diag/per_class/accuracy/{i}"] for i in range(3)] == [0.5, 0.25, 0.75]
    assert not any(k.startswith("diag/confusion/matrix") for k in logged)  # a matrix stays in the JSONL
    assert run.summary["status"] == "interrupted" and run.summary["preempting"] and run.finished == 1


def test_a_failing_wandb_is_detached_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(wandb_backend.wandb, "init", lambda **kw: FakeRun(fail=True))
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--wandb", "--out", str(out), *TINY]) == 0
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 1
    warnings = [json.loads(line) for line in (out / "events.jsonl").open() if '"telemetry.warning"' in line]
    assert any("wandb" in w["fields"]["message"] and "W&B is down" in w["fields"]["message"] for w in warnings)


@pytest.mark.parametrize("status, code", [("ok", 0), ("aborted", 1), ("diverged", 1)])
def test_a_ppo_runs_end_is_its_summary_and_exit_code(monkeypatch, status, code):
    run = FakeRun()
    monkeypatch.setattr(wandb_backend.wandb, "init", lambda **kw: run)
    with TelemetryHub("r", level="minimal", backends=[WandbBackend("r", project="p")]) as hub:
        hub.emit(_of(ev.PPOUpdate))
        hub.emit(attrs.evolve(_of(ev.RLRunEnded), status=status))
    assert run.finished == code and run.summary["status"] == status
    assert run.summary["updates"] == _of(ev.RLRunEnded).updates and "run_dir" not in run.summary
