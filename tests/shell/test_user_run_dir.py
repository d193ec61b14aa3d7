"""A run from a script (the plumbing of issue 19 item 3): `driver.train(cfg, user=UserParts(...))` grows the
user's MLP (tests/shell/test_user_host_run.py) on the script's own data, writes the whole run directory,
and a run cut short and resumed with the same parts ends with the uninterrupted run's metrics and weights."""

import csv

import torch
from test_user_host_run import FACTORY, blobs, user_catalogue

from esper.shell.checkpoint import read_checkpoint
from esper.shell.driver import train
from esper.shell.run_config import RunConfig
from esper.shell.user_code import UserParts

CFG = RunConfig(epochs=16, batch_size=32, germination="early", min_germinate_epoch=1, checkpoint_every=3,
                telemetry_level="minimal", progress=False, report=False, device="cpu")
WALL = ("epoch_s", "samples_per_s")  # wall-clock columns: the only ones equal runs may differ in


def _rows(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in WALL and "mem" not in k and "rss" not in k}
                for row in csv.DictReader(f)]


def test_a_script_run_writes_its_directory_and_a_resume_equals_the_uninterrupted_run(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        user = UserParts(data=blobs(), host_factory=FACTORY, catalogue=user_catalogue())
        whole, cut = tmp_path / "whole", tmp_path / "cut"
        summary = train(CFG, out=str(whole), user=user)
        train(CFG, out=str(cut), user=user, stop_after=7)
        train(RunConfig(), resume=str(cut), user=UserParts(data=blobs(), host_factory=FACTORY,
                                                           catalogue=user_catalogue()))
    finally:
        torch.set_num_threads(threads)
    assert summary.status == "ok" and summary.epochs == 16
    for name in ("config.json", "metrics.csv", "events.jsonl", "summary.json", "checkpoints/final.pt"):
        assert (whole / name).is_file(), name
    model = read_checkpoint(whole / "checkpoints" / "final.pt")["model"]
    assert model["host"]["factory"]["path"] == "test_user_host_run:mlp_stack"
    assert [b["name"] for b in model["blueprints"]] == ["scale"]
    rows = _rows(whole)
    assert len(rows) == 16 and _rows(cut) == rows  # the cut (epoch 7) falls inside the seed's life
    assert rows[0]["action"] == "GERMINATE(slot=0, blueprint=3, tempo=1)"  # germinable index 3: "scale"
    assert user.catalogue.germinable[3].name == "scale"
    final = read_checkpoint(cut / "checkpoints" / "final.pt")["model"]["tensors"]
    assert all(torch.equal(final[k], v) for k, v in model["tensors"].items())
