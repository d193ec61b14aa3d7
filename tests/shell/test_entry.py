"""A run from a script (docs/runtime.md §6.7): `esper.train(...)` grows a user's nn.Sequential MLP on the script's
tensors with the heuristic (a seed germinates and fossilizes), writes the whole run directory, and a run cut short
and resumed through the entry ends as the uninterrupted run; PPO learns on the user's host; the CLI is a caller of
the entry; every misuse is one line.

The MLP is narrow (3 hidden units) on an XOR of two of its six inputs, the residual CNN narrow (4 channels) on
noisy waves, so a seed's extra capacity pays; each task's G2 improvement threshold is relaxed (a TaskPreset field a
script may set) so growth fits in 24 tiny epochs.
"""

import csv
import json
from pathlib import Path

import attrs
import pytest
import torch
from torch import nn

import esper
from esper.core.errors import ConfigError
from esper.shell.checkpoint import read_checkpoint
from esper.shell.cli import main
from esper.shell.data.taskdata import TaskData
from esper.shell.user_code import HostFactory, UserParts, resumed_parts, user_record

EPOCHS, D_IN = 24, 6
OPTIONS = {"epochs": EPOCHS, "batch_size": 32, "germination": "early", "min_germinate_epoch": 1, "host_lr": 0.05,
           "telemetry_level": "minimal", "progress": False, "device": "cpu"}
WALL = ("epoch_s", "samples_per_s")  # wall-clock columns: the only ones equal runs may differ in


def xor_mlp(generator: torch.Generator, width: int = 3) -> nn.Sequential:
    """The user's network: a plain MLP, its init drawn from the global RNG the entry seeds from the run."""
    return nn.Sequential(nn.Linear(D_IN, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))


def xor_tensors(seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    x = torch.rand(768, D_IN, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    y = (x[:, 0] * x[:, 1] > 0).long()
    return (x[:512], y[:512]), (x[512:], y[512:])


def xor_data(seed: int = 0) -> TaskData:
    return _growing(esper.tensor_data(*xor_tensors(seed), name="xor"))


def _growing(data: TaskData) -> TaskData:
    return attrs.evolve(data, preset=attrs.evolve(data.preset, min_training_improvement=-1.0))


class Residual(nn.Module):
    """x ↦ relu(x + conv(relu(conv(x)))): the user's residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = (nn.Conv2d(channels, channels, 3, padding=1) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


def residual_cnn(generator: torch.Generator, channels: int = 4) -> nn.Sequential:
    """The user's small residual CNN over (1, 8, 8) images, four classes."""
    return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), Residual(channels), Residual(channels),
                         nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 4)))


def stripes_data() -> TaskData:
    """Noisy 8×8 waves of four orientations at random phases: the class is the orientation."""
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (768,), generator=gen)
    i, j = torch.arange(8.0)[:, None], torch.arange(8.0)[None, :]
    along = torch.stack([i + 0 * j, j + 0 * i, (i + j) * 0.7, (i - j) * 0.7])[labels]
    waves = torch.sin(along * 1.6 + torch.rand(768, 1, 1, generator=gen) * 6.28)
    x = (0.7 * waves + torch.randn(768, 8, 8, generator=torch.Generator().manual_seed(0))).unsqueeze(1)
    return _growing(esper.tensor_data((x[:512], labels[:512]), (x[512:], labels[512:]), name="stripes",
                                      augment=False))


# (host, slots, data): a user's nn.Sequential MLP on flat inputs, a user's residual CNN on images
GROWN = {"mlp": (xor_mlp, {"hidden": 1}, xor_data), "residual-cnn": (residual_cnn, {"mid": 2}, stripes_data)}


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in WALL and "mem" not in k and "rss" not in k}
                for row in csv.DictReader(f)]


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one reduction order: the cut and the whole run compare bit for bit
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", GROWN)
def test_a_script_grows_its_network_and_a_resumed_run_equals_the_uninterrupted_one(tmp_path, case):
    host, slots, data = GROWN[case]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    summary = esper.train(host=host, slots=slots, data=data(), out=whole, **OPTIONS)
    assert summary.status == "ok" and summary.epochs == EPOCHS and summary.task == data().preset.name
    kinds = [e["event"] for e in _events(whole)]
    assert "seed.germinated" in kinds and "seed.fossilized" in kinds
    for name in ("config.json", "metrics.csv", "events.jsonl", "summary.json", "checkpoints/final.pt",
                 "report/report.png"):
        assert (whole / name).is_file(), name
    record = json.loads((whole / "config.json").read_text())
    assert record["user"]["host_factory"]["path"] == f"test_entry:{host.__name__}"
    assert record["user"]["data"] == data().preset.name and record["data_source"]["kind"] == "tensors"

    esper.train(host=host, slots=slots, data=data(), out=cut, stop_after=9, **OPTIONS)
    assert len(_rows(cut)) == 9
    resumed = esper.train(resume=cut, host=host, slots=slots, data=data())
    assert resumed.epochs == EPOCHS and _rows(cut) == _rows(whole)
    final, other = (read_checkpoint(d / "checkpoints" / "final.pt")["model"]["tensors"] for d in (whole, cut))
    assert all(torch.equal(other[k], v) for k, v in final.items())


def test_a_resume_rebuilds_the_recorded_parts_and_refuses_without_the_script_s_data(tmp_path, capsys):
    run = tmp_path / "run"
    esper.train(host=xor_mlp, slots={"hidden": 1}, data=xor_data(), out=run, stop_after=1, **OPTIONS)
    record = json.loads((run / "config.json").read_text())["user"]
    parts = resumed_parts(record, UserParts(data=xor_data()))
    assert parts.host_factory == HostFactory(path="test_entry:xor_mlp", slots={"hidden": 1})
    assert user_record(parts) == record
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["esper-run: error: this run trained on data its script handed in (xor): resume it from Python, "
                   "esper.train(resume=RUN_DIR, data=<the same data>)"]
    assert main(["evaluate", str(run)]) == 2
    assert "trained on data its script handed in (xor)" in capsys.readouterr().err
    with pytest.raises(Exception, match="data changed"):
        esper.train(resume=run, data=attrs.evolve(xor_data(seed=1)))


def test_ppo_learns_on_the_user_host_with_sizes_from_its_slots_and_catalogue(tmp_path):
    catalogue = esper.catalogue_for("mlp")
    summary = esper.train(host=xor_mlp, slots={"hidden": 1}, data=xor_data(), out=tmp_path / "ppo",
                          **{**OPTIONS, "controller": "ppo", "epochs": 3, "n_envs": 2, "episodes": 2})
    assert summary["updates"] == 1
    started = next(e["fields"] for e in _events(tmp_path / "ppo") if e["event"] == "rl.run_started")
    assert (started["n_slots"], started["n_blueprints"]) == (1, len(catalogue.germinable))


def test_options_are_the_cli_s_and_a_misspelt_one_is_one_line():
    with pytest.raises(ConfigError, match=r"^unknown option epoch=3 \(did you mean epochs\?\)$"):
        esper.train(epoch=3)
    with pytest.raises(ConfigError, match="host_lr"):
        esper.train(host_lr=-1.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"host": nn.Linear(2, 2)}, "a built network cannot be recorded"),
    ({"slots": {"hidden": 1}}, "pass host= too"),
    ({"host": lambda generator: None}, "has no import path"),
    ({"host": HostFactory(path="test_entry:xor_mlp"), "slots": {"hidden": 1}}, "carries its own slots"),
    ({"data": [1, 2, 3]}, "data must be"),
    ({"config": 3}, "config must be"),
])
def test_a_misused_part_is_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message) as caught:
        esper.train(**kwargs)
    assert "\n" not in str(caught.value)


def test_the_cli_is_a_caller_of_the_entry(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("esper.shell.entry.train", lambda cfg, **kw: seen.update(cfg=cfg, **kw))
    assert main(["train", "--epochs", "3", "--host", "tiny", "--out", str(tmp_path / "r")]) == 0
    assert seen["cfg"].epochs == 3 and seen["cfg"].host == "tiny" and seen["out"] == str(tmp_path / "r")


def test_a_preset_host_name_is_the_host_option_and_a_config_is_a_base_under_the_options(monkeypatch):
    seen = {}
    monkeypatch.setattr("esper.shell.entry.drive_run", lambda cfg, **kw: seen.update(cfg=cfg, **kw))
    esper.train(esper.RunConfig(epochs=5, seed=3), host="tiny", epochs=7)
    assert (seen["cfg"].epochs, seen["cfg"].seed, seen["cfg"].host, seen["user"]) == (7, 3, "tiny", None)
    esper.train({"epochs": 4}, host="test_entry:xor_mlp", slots={"hidden": 1})
    assert seen["cfg"].epochs == 4 and seen["user"].host_factory.path == "test_entry:xor_mlp"


def test_flat_data_without_a_host_is_one_line():
    with pytest.raises(ConfigError, match=r"^flat \(N, D\) data has no built-in host: pass host="):
        esper.train(data=xor_tensors())


def test_a_script_s_data_moves_to_the_run_s_device():
    data = stripes_data()
    moved = UserParts(data=data).task_data(torch.device("meta"))
    assert moved.device == torch.device("meta") and moved.transform.mean.device == torch.device("meta")
    assert all(getattr(moved, name).is_meta for name in ("train_inputs", "train_labels", "heldout_inputs",
                                                          "heldout_labels"))
    assert data.train_inputs.device.type == "cpu" and moved.preset == data.preset
    assert UserParts(data=data).task_data(torch.device("cpu")) is data


@pytest.mark.gpu
def test_a_script_run_on_cuda_takes_its_cpu_tensors_there(tmp_path):
    summary = esper.train(host=residual_cnn, slots={"mid": 2}, data=stripes_data(), out=tmp_path / "run",
                          **{**OPTIONS, "epochs": 2, "device": "cuda"})
    assert summary.status == "ok" and summary.epochs == 2
