"""`esper-run train --task text --data-dir DIR` end to end (CPU, `tiny` host, a few KB of text written
here): a folder of .txt files and a saved dataset train; a run cut after a finished epoch resumes to
the uninterrupted run's rows and weights; evaluate reproduces the final loss; changed or bad data is
one line, exit 2, before anything is written."""

import csv
import json
from pathlib import Path

import pytest
import torch

from esper.shell.cli import main
from esper.shell.driver import train
from esper.shell.run_config import RunConfig

ARGS = ["--task", "text", "--tokenizer", "bpe", "--host", "tiny", "--controller", "static", "--batch-size", "8",
        "--train-batches", "3", "--no-progress", "--no-report", "--telemetry-level", "minimal"]


@pytest.fixture(autouse=True)
def isolated_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # tokens, BPE, the text builder's locks
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)


def _write_text(folder: Path, n_files: int = 5) -> Path:
    from esper.shell.data import synth_stories as ss

    folder.mkdir(parents=True)
    texts = ss.generate_stories(n_files * 10, ss.split_generator(0, "train"))
    for i in range(n_files):
        (folder / f"part{i}.txt").write_text("\n\n".join(texts[i * 10:(i + 1) * 10]))
    return folder


def _rows(run: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "epoch_s"} for row in csv.DictReader((run / "metrics.csv").open())]


def _final(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "final.pt", weights_only=True)["model"]["tensors"]


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("esper-run: error:") and err.count("\n") == 1 and needle in err, err


def test_a_text_folder_trains_resumes_exactly_and_evaluates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write_text(tmp_path / "corpus")
    cfg = RunConfig(task="text", data_dir=str(folder), tokenizer="bpe", host="tiny", controller="static", epochs=2,
                    batch_size=8, train_batches=3, progress=False, report=False, telemetry_level="minimal",
                    checkpoint_every=1)
    train(cfg, out=str(tmp_path / "whole"))
    train(cfg, out=str(tmp_path / "cut"), stop_after=1)  # stopped after epoch 1's checkpoint
    assert len(_rows(tmp_path / "cut")) == 1
    assert main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _rows(whole) == _rows(cut) and len(_rows(whole)) == 2
    a, b = _final(whole), _final(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((whole / "config.json").read_text())
    source, tokenizer = record["data_source"], record["data_source"]["tokenizer"]
    assert (source["preset"], source["kind"], tokenizer["kind"]) == ("text", "local", "bpe")
    assert record["config"]["data"]["text_column"] == "text"
    capsys.readouterr()
    assert main(["evaluate", str(whole), "--json", "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    summary = json.loads((whole / "summary.json").read_text())
    assert evaluated["task"] == "text" and evaluated["val_loss"] == pytest.approx(summary["final_val_loss"], rel=1e-6)

    (folder / "part0.txt").write_text("Other text now.\n" * 200)  # the data changed since the run
    listing = sorted(p.name for p in cut.rglob("*"))
    _one_line_exit_2(["evaluate", str(whole)], capsys, "its data changed")
    _one_line_exit_2(["train", "--resume", str(cut), "--epochs", "3", "--no-progress"], capsys, "its data changed")
    assert sorted(p.name for p in cut.rglob("*")) == listing and len(_rows(cut)) == 2


def test_a_saved_dataset_with_a_text_column_trains(tmp_path: Path) -> None:
    import datasets

    from esper.shell.data import synth_stories as ss

    texts = ss.generate_stories(60, ss.split_generator(1, "train"))
    datasets.Dataset.from_dict({"story": texts}).save_to_disk(str(tmp_path / "saved"))
    out = tmp_path / "run"
    assert main(["train", *ARGS, "--data-dir", str(tmp_path / "saved"), "--text-column", "story", "--epochs", "1",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["data_source"]["n_heldout"] > 0


def _empty_files(folder: Path) -> None:
    (folder / "a.txt").write_text("")


def _short_heldout(folder: Path) -> None:
    _write_text(folder / "train", n_files=2)
    (folder / "val").mkdir()
    (folder / "val" / "v.txt").write_text("Too short to fill a window.")


@pytest.mark.parametrize(("make", "extra", "needle"), [
    (lambda folder: (folder / "notes.md").write_text("x"), [], "no training .txt files"),
    (_empty_files, [], "is empty"),
    (_short_heldout, [], "fewer than one window of 65"),
])
def test_bad_text_data_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             make, extra: list[str], needle: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    make(folder)
    out = tmp_path / "run"
    _one_line_exit_2(["train", *ARGS, "--data-dir", str(folder), "--out", str(out), *extra], capsys, needle)
    assert not out.exists()


def test_a_saved_dataset_without_the_column_is_one_line_exit_2(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import datasets

    datasets.Dataset.from_dict({"story": ["Once upon a time."] * 4}).save_to_disk(str(tmp_path / "saved"))
    capsys.readouterr()  # save_to_disk's own progress bar
    out = tmp_path / "run"
    _one_line_exit_2(["train", *ARGS, "--data-dir", str(tmp_path / "saved"), "--out", str(out)], capsys,
                     "no text column 'text'")
    assert not out.exists()
