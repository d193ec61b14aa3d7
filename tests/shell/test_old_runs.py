"""Files written before the codec still load, evaluate and resume.

- Every committed `results/*/compare/` run: config.json and summary.json decode and encode back to
  the very bytes on disk; compare.json's groups and records likewise.
- `tests/fixtures/old_run`: a tiny heuristic run (synth-images, 14 epochs of 256 images, a seed
  germinated at epoch 1 and culled at 10) written by the code before the codec, with its final
  checkpoint. It evaluates to the accuracy its summary recorded, and resumes for one more epoch.
- `tests/fixtures/old_ppo_records.pt`: a PPO checkpoint's normalisers and anomaly streaks and a
  policy file's obs normaliser and RL config, from a tiny PPO run of the same code (the checkpoint
  itself is 2 MB).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from esper.core import codec, wire
from esper.core.rl_config import RLConfig
from esper.core.stats import GroupStats, RunRecord
from esper.core.summary import RunSummary
from esper.shell.checkpoint import load_model_checkpoint
from esper.shell.cli import main
from esper.shell.compare_table import compare_json
from esper.shell.data.source import DataSource
from esper.shell.evaluate import evaluate
from esper.shell.rl.anomaly import AnomalyState
from esper.shell.rl.update import Normalisers
from esper.shell.run_checkpoint import load_run_checkpoint
from esper.shell.run_config import load_config_file, resolve
from esper.shell.telemetry.rundir import RunDirectory, atomic_write_json

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
OLD_RUN = FIXTURES / "old_run"
RESULT_RUNS = sorted(p.parent for p in ROOT.glob("results/**/compare/*/summary.json"))


def rewritten(tmp_path: Path, value: object) -> str:
    """What the run directory writes for `value` today (summary.json and config.json's writer)."""
    return atomic_write_json(tmp_path / "out.json", value).read_text(encoding="utf-8")


def test_the_committed_results_are_here() -> None:
    assert len(RESULT_RUNS) >= 24 and len(list(ROOT.glob("results/*/compare/compare.json"))) >= 2


@pytest.mark.parametrize("run", [*RESULT_RUNS, OLD_RUN], ids=lambda p: "/".join(p.parts[-3:]))
def test_summary_and_config_decode_and_encode_to_the_same_bytes(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("config.json", "summary.json"):
        shutil.copy(run / name, copy / name)
    summary = RunDirectory(copy, resume=True).read_summary()  # the codec-based loader
    assert isinstance(summary, RunSummary) and summary.final_val_acc is not None
    assert rewritten(tmp_path, codec.encode(summary)) == (run / "summary.json").read_text(encoding="utf-8")
    record = json.loads((run / "config.json").read_text(encoding="utf-8"))
    source = codec.decode(DataSource, record["data_source"])
    assert source == codec.decode(DataSource, codec.encode(summary.data_source))
    again = {**record, "data_source": codec.encode(source)}
    assert rewritten(tmp_path, again) == (run / "config.json").read_text(encoding="utf-8")
    assert resolve(load_config_file(run / "config.json"), {}).task == summary.task


RESULT_COMPARES = sorted(ROOT.glob("results/**/compare/compare.json"))


@pytest.mark.parametrize("path", RESULT_COMPARES, ids=lambda p: "/".join(p.parts[-4:-2]))
def test_compare_json_decodes_and_encodes_to_the_same_bytes(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    groups = codec.decode(list[GroupStats], data["groups"])
    records = codec.decode(list[RunRecord], data["records"])
    assert {g.group for g in groups} >= {"static", "heuristic"}
    assert len({(r.group, r.seed) for r in records}) == len(records) == len({g.group for g in groups}) * len(
        {r.seed for r in records})  # one run per group and seed, whatever the number of seeds
    assert json.dumps(compare_json(groups, records, data["meta"]), indent=2) == path.read_text(encoding="utf-8")


def test_old_events_decode_and_encode_to_the_same_fields() -> None:
    records = [json.loads(line) for line in (OLD_RUN / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    events = [wire.from_dict(r["event"], r["fields"]) for r in records]
    # Optional fields added since the run was written encode at their defaults, after the old ones.
    added = {"epoch.metrics": dict.fromkeys(
        ("host_rss_mb", "host_peak_rss_mb", "cuda_peak_allocated_mb", "cuda_peak_reserved_mb")),
             "run.start": {"data_path": None}}
    assert [wire.event_fields(e) for e in events] == [{**r["fields"], **added.get(r["event"], {})} for r in records]
    assert {"run.start", "seed.germinated", "seed.culled", "checkpoint.saved", "run.end"} <= {e.kind for e in events}


def test_old_checkpoint_loads_with_its_seed_and_evaluates_to_its_recorded_accuracy() -> None:
    _, data = load_run_checkpoint(OLD_RUN / "checkpoints" / "final.pt")
    loaded = load_model_checkpoint(data["model"])
    late = loaded.state.slot("late")
    assert late.seed is not None and late.seed.stage.name == "EMBARGOED" and late.seed.seed_id == "late#0"
    result = evaluate(str(OLD_RUN), data_dir=None, device="cpu", as_json=True)
    summary = json.loads((OLD_RUN / "summary.json").read_text(encoding="utf-8"))
    assert result["epoch"] == 14
    assert result["val_acc"] == pytest.approx(summary["final_val_acc"], abs=1e-9)
    assert result["params"] == summary["total_params"]


def test_old_run_resumes_one_more_epoch(tmp_path: Path) -> None:
    run = shutil.copytree(OLD_RUN, tmp_path / "old_run")
    assert main(["train", "--resume", str(run), "--epochs", "15", "--no-progress", "--no-report"]) == 0
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["epochs"] == 15 and summary["status"] == "ok"
    assert [s["seed_id"] for s in summary["seeds"]] == ["late#0"]  # the seed records came from the checkpoint
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert events.count("run.resume") == 1


def test_old_ppo_records_decode_and_encode_back() -> None:
    old = torch.load(FIXTURES / "old_ppo_records.pt", weights_only=True)
    norms = codec.decode(Normalisers, old["norms"])
    assert norms.obs.mean.shape == norms.obs.var.shape and float(norms.reward.count) == old["norms"]["reward"]["count"]
    assert codec.encode(norms) == old["norms"]
    assert codec.encode(codec.decode(AnomalyState, old["anomalies"])) == old["anomalies"]
    assert codec.encode(codec.decode(type(norms.obs), old["obs_norm"])) == old["obs_norm"]
    rl = codec.decode(RLConfig, old["rl"])  # policy.pt's config: attrs.asdict wrote potentials as a tuple
    # RLConfig fields added after the fixture, at their defaults:
    added_since = {"weight_decay": 0.0, "policy": "lstm", "op_prior": [0.0, 0.0, 0.0, 0.0]}
    assert codec.encode(rl) == {**old["rl"], "potentials": list(old["rl"]["potentials"]), **added_since}
