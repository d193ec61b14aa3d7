"""Model checkpoints (docs/lifecycle.md §8.6, §11 item 12): round trip with seeds in every stage at
once (one case in a fresh process), architecture mismatches and pickled objects refused."""

import copy
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from seedbed_drive import (
    boundary,
    germinate_action,
    make_model,
    mixed_model,
    run_mixed,
    sample_batch,
    seeded,
    train_step,
)

from esper.core import codec
from esper.core.seed import LifecycleState
from esper.core.stages import Stage
from esper.shell import checkpoint as ckpt_mod
from esper.shell.checkpoint import (
    FORMAT,
    CheckpointError,
    load_model_checkpoint,
    load_optimizer_state,
    model_checkpoint,
    read_checkpoint,
    save_model_checkpoint,
)
from esper.shell.model import MorphogeneticModel
from esper.shell.optim_groups import param_groups, sync_optimizer

LR = {"host_lr": 1e-3, "seed_lr": 3e-3, "weight_decay": 5e-4}
HERE = Path(__file__).parent

# Runs in a fresh interpreter: load, rebuild the optimizer, evaluate, take one train step.
CHILD = """
import copy
import sys
import torch
sys.path.insert(0, sys.argv[1])
from seedbed_drive import train_step
from esper.core import codec
from esper.shell.checkpoint import load_model_checkpoint, load_optimizer_state
from esper.shell.optim_groups import param_groups

path, inputs, out, threads = sys.argv[2:6]
torch.set_num_threads(int(threads))  # the parent's: a conv's summation order depends on it
model, state, optimizer_state = load_model_checkpoint(path)
optimizer = torch.optim.AdamW(param_groups(model, host_lr=0.1, seed_lr=0.1))
load_optimizer_state(optimizer, optimizer_state)
x, target = torch.load(inputs, weights_only=True)
model.eval()
result = {"out": model(x).detach(), "state": codec.encode(state),
          "optimizer": copy.deepcopy(optimizer.state_dict())}
train_step(model, optimizer, x, target)
result["after"] = model.state_dict()
torch.save(result, out)
"""


def trained_mixed(preset: str) -> tuple[MorphogeneticModel, LifecycleState, torch.optim.Optimizer,
                                        tuple[torch.Tensor, torch.Tensor]]:
    """A model driven through the mixed script, synced and trained one step per boundary."""
    torch.manual_seed(0)
    model = mixed_model(preset)
    batch = sample_batch(model, batch=4)
    optimizer = torch.optim.AdamW(param_groups(model, **LR))

    def on_boundary(state: LifecycleState) -> None:
        model.sync_to(state)
        sync_optimizer(optimizer, model)
        train_step(model, optimizer, *batch)

    state = run_mixed(model, on_boundary)
    return model, state, optimizer, batch


def assert_same_optimizer_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for index, entry in a["state"].items():
        assert entry.keys() == b["state"][index].keys()
        assert all(torch.equal(v, b["state"][index][k]) for k, v in entry.items())


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_round_trip_in_a_fresh_process(tmp_path):
    model, state, optimizer, (x, target) = trained_mixed("cifar10-deep")
    path = save_model_checkpoint(tmp_path / "model.pt", model, state, optimizer)
    torch.save((x, target), tmp_path / "inputs.pt")
    model.eval()
    expected = model(x).detach()
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    train_step(model, optimizer, x, target)

    subprocess.run([sys.executable, "-c", CHILD, str(HERE), str(path), str(tmp_path / "inputs.pt"),
                    str(tmp_path / "result.pt"), str(torch.get_num_threads())], check=True, timeout=120)
    result = torch.load(tmp_path / "result.pt", weights_only=True)
    assert torch.equal(result["out"], expected)
    assert codec.decode(LifecycleState, result["state"]) == state
    assert_same_optimizer_state(result["optimizer"], saved_optimizer)
    assert_same_tensors(result["after"], model.state_dict())


def test_round_trip_in_process_transformer():
    model, state, optimizer, (x, target) = trained_mixed("tiny")
    data = model_checkpoint(model, state, optimizer)
    model.eval()
    expected = model(x)

    loaded, loaded_state, optimizer_state = load_model_checkpoint(data)
    restored = torch.optim.AdamW(param_groups(loaded, host_lr=0.1, seed_lr=0.1))
    load_optimizer_state(restored, optimizer_state)
    loaded.eval()
    assert torch.equal(loaded(x), expected)
    assert loaded_state == state
    assert loaded.structure_key() == model.structure_key()
    assert [s.alpha for s in loaded.seed_slots()] == [s.alpha for s in model.seed_slots()]
    assert_same_optimizer_state(restored.state_dict(), optimizer.state_dict())
    train_step(model, optimizer, x, target)
    train_step(loaded, restored, x, target)
    assert_same_tensors(loaded.state_dict(), model.state_dict())


def test_checkpoint_is_plain_data_and_a_snapshot(tmp_path):
    model = make_model("fashion-mnist")
    state = seeded(model, "mid", "depthwise", Stage.BLENDING)
    model.sync_to(state)
    data = model_checkpoint(model, state)
    assert data["format"] == FORMAT and data["catalogue_version"] == 1 and data["topology"] == "cnn"
    assert data["host"]["name"] == "fashion-mnist"
    assert data["lifecycle"] == codec.encode(state) and "optimizer" not in data
    before = {k: v.clone() for k, v in data["tensors"].items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert_same_tensors(data["tensors"], before)  # later training does not reach the snapshot
    path = save_model_checkpoint(tmp_path / "sub" / "m.pt", model, state)
    raw = torch.load(path, weights_only=True)
    assert raw["lifecycle"] == codec.encode(state)
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temp file left behind


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    model = make_model("fashion-mnist")
    state = seeded(model, "mid", "norm")
    model.sync_to(state)
    path = save_model_checkpoint(tmp_path / "m.pt", model, state)
    original = path.read_bytes()

    def crash(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model_checkpoint(path, model, state)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_saving_an_unsynced_state_is_refused():
    model = make_model("fashion-mnist")
    with pytest.raises(CheckpointError, match="sync_to"):
        model_checkpoint(model, seeded(model, "mid", "norm"))


def test_optimizer_groups_are_restored_in_their_saved_order():
    model = make_model("fashion-mnist")
    optimizer = torch.optim.SGD(param_groups(model, **LR), momentum=0.9)
    state = seeded(model, "late", "norm")  # late germinates first ...
    model.sync_to(state)
    sync_optimizer(optimizer, model)
    x, target = sample_batch(model)
    train_step(model, optimizer, x, target)
    rules = model.rules()
    state = boundary(state, rules, germinate_action(state, rules, "early", "conv_light"))  # ... early later
    model.sync_to(state)
    sync_optimizer(optimizer, model)
    train_step(model, optimizer, x, target)
    assert [g["name"] for g in optimizer.param_groups] == ["host", "seed:late", "seed:early"]
    loaded, _, saved = load_model_checkpoint(model_checkpoint(model, state, optimizer))
    restored = torch.optim.SGD(param_groups(loaded, **LR), momentum=0.9)  # slot order: early, late
    load_optimizer_state(restored, saved)
    assert_same_optimizer_state(restored.state_dict(), optimizer.state_dict())
    wrong = torch.optim.SGD(param_groups(make_model("fashion-mnist"), **LR), momentum=0.9)
    with pytest.raises(CheckpointError, match="optimizer groups"):
        load_optimizer_state(wrong, saved)


# --- refusals --------------------------------------------------------------------------------


def _edited(data: dict, edit) -> dict:
    changed = copy.deepcopy(data)
    edit(changed)
    return changed


def _seed_record(data: dict, slot: int) -> dict:
    return data["lifecycle"]["slots"][slot]["seed"]


EDITS = {
    # Same parameter count (norm, 33 at C = 16 vs a hacked count): the tensors disagree.
    "blueprint": lambda d: _seed_record(d, 1).update(blueprint="norm", blueprint_index=1, n_params=33),
    "blueprint_count": lambda d: _seed_record(d, 1).update(blueprint="norm", blueprint_index=1),
    "unknown_blueprint": lambda d: _seed_record(d, 1).update(blueprint="hydra"),
    "host_width": lambda d: d["host"]["config"].update(width=16),
    "host_slots": lambda d: d["host"]["config"].update(slots=[["early", 0], ["late", 2]]),
    "host_kind": lambda d: d["host"]["config"].update(kind="transformer"),
    "missing_tensor": lambda d: d["tensors"].pop("slots.1.seed.dw.weight"),
    "format": lambda d: d.update(format="esper.model/0"),
    "catalogue_version": lambda d: d.update(catalogue_version=2),
    "lifecycle": lambda d: d["lifecycle"].update(topology="graph"),
}


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_mismatching_architecture_fails_with_one_clear_line(tmp_path, edit):
    model = make_model("fashion-mnist")
    state = seeded(model, "mid", "depthwise", Stage.PROBATIONARY)
    model.sync_to(state)
    path = tmp_path / "edited.pt"
    torch.save(_edited(model_checkpoint(model, state), EDITS[edit]), path)
    with pytest.raises(CheckpointError) as info:
        load_model_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    # No chained traceback from deep inside torch or attrs.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


class Payload:
    """Unpickling this would create a marker folder: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickled_object_is_refused_not_run(tmp_path):
    model = make_model("fashion-mnist")
    state = seeded(model, "mid", "norm")
    model.sync_to(state)
    data = model_checkpoint(model, state)
    data["extra"] = Payload(tmp_path / "pwned")
    torch.save(data, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused to unpickle") as info:
        load_model_checkpoint(tmp_path / "evil.pt")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_unreadable_files_raise_checkpoint_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model_checkpoint(tmp_path / "absent.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not an esper checkpoint"):
        load_model_checkpoint(tmp_path / "list.pt")


# Shrunk from the flaky `test_garbage_checkpoint` (os.urandom): random.Random(k).randbytes(4096) makes the
# weights-only unpickler raise IndexError (k = 2) and KeyError (k = 20), which escaped as a traceback
# (exit 1) before read_checkpoint caught them; k = 195 (UnicodeDecodeError, a ValueError) was already caught.
@pytest.mark.parametrize("k", [2, 20, 195])
def test_corrupt_bytes_are_one_checkpoint_error(tmp_path, k):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(random.Random(k).randbytes(4096))
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable checkpoint"):
        read_checkpoint(junk)
