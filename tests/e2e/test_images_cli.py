"""`esper-run train --task images` end to end on CPU (docs/runtime.md §5.5): a PNG folder with a val
split, a flat JPEG folder, a saved dataset; evaluate and resume re-derive the same task and refuse
changed data; `esper-run tasks --data-dir`; every kind of bad data exits 2 in one line before the run
directory exists."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from esper.shell.cli import main
from esper.testing.image_folders import CLASSES, write_class_folders, write_saved_dataset

TINY = ["--task", "images", "--epochs", "2", "--batch-size", "8", "--host-width", "4", "--device", "cpu",
        "--no-progress", "--no-report", "--telemetry-level", "minimal"]


@pytest.fixture(autouse=True)
def _isolated_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _one_line(capsys, needle: str) -> None:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esper-run: error:") and needle in lines[0], lines


def test_a_png_folder_trains_evaluates_resumes_and_refuses_changed_data(tmp_path, capsys):
    data, run = write_class_folders(tmp_path / "pets"), tmp_path / "run"
    assert main(["train", *TINY, "--data-dir", str(data), "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    source = json.loads((run / "config.json").read_text())["data_source"]
    assert summary["status"] == "ok" and summary["task"] == "images"
    assert source["images"]["classes"] == list(CLASSES) and source["images"]["input_shape"] == [3, 20, 24]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["val_acc"] == pytest.approx(summary["final_val_acc"], abs=1e-9)
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress", "--no-report"]) == 0
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
    shutil.copy(data / "train" / "red" / "000.png", data / "train" / "blue" / "000.png")  # one image changed
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "4", "--no-progress", "--no-report"]) == 2
    _one_line(capsys, "changed since the run started")
    assert _snapshot(run) == before
    assert main(["evaluate", str(run), "--device", "cpu"]) == 2
    _one_line(capsys, "changed since the run started")


def _rows(run: Path) -> list[dict[str, str]]:
    """metrics.csv without its wall-clock columns (the only ones that differ between equal runs)."""
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k not in ("epoch_s", "samples_per_s")} for row in csv.DictReader(f)]


def test_a_jpeg_folder_streamed_trains_as_the_resident_run_and_resumes_across_paths(tmp_path, capsys):
    """`--data-budget 0` streams the folder through DataLoader workers that decode the JPEGs batch by batch:
    the same data hash, the same rows (bitwise on the CPU: the same batches, §5.7); a resume may change path."""
    data = write_class_folders(tmp_path / "pets", suffix=".jpg")
    runs = {path: tmp_path / path for path in ("resident", "streamed")}
    assert main(["train", *TINY, "--data-dir", str(data), "--out", str(runs["resident"])]) == 0
    assert main(["train", *TINY, "--data-dir", str(data), "--out", str(runs["streamed"]), "--data-budget", "0",
                 "--data-workers", "1"]) == 0
    configs = {p: json.loads((r / "config.json").read_text()) for p, r in runs.items()}
    assert {p: c["data_path"] for p, c in configs.items()} == {"resident": "resident", "streamed": "streamed"}
    assert configs["resident"]["data_source"] == configs["streamed"]["data_source"]  # hash, stats, record
    rows = {p: _rows(run) for p, run in runs.items()}
    assert rows["resident"] == rows["streamed"] and len(rows["resident"]) == 2
    assert all(row["train_loss"] and row["val_acc"] for row in rows["streamed"])
    assert main(["train", "--resume", str(runs["streamed"]), "--epochs", "3", "--data-budget", "1G",
                 "--no-progress", "--no-report"]) == 0  # the same data, now resident: accepted
    assert json.loads((runs["streamed"] / "summary.json").read_text())["epochs"] == 3


def test_a_flat_jpeg_folder_trains_with_a_stratified_held_out_split(tmp_path):
    data, run = write_class_folders(tmp_path / "flat", suffix=".jpg", split_folders=False), tmp_path / "run"
    assert main(["train", *TINY, "--data-dir", str(data), "--out", str(run), "--image-size", "16"]) == 0
    images = json.loads((run / "config.json").read_text())["data_source"]["images"]
    assert images["heldout"].startswith("stratified") and images["counts"]["heldout"] == [1, 1, 1]
    assert images["input_shape"] == [3, 16, 16]


def test_a_saved_dataset_trains_with_its_named_columns(tmp_path):
    data, run = write_saved_dataset(tmp_path / "saved"), tmp_path / "run"
    assert main(["train", *TINY, "--data-dir", str(data), "--image-column", "photo", "--label-column", "kind",
                 "--out", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"


def test_tasks_describes_what_a_folder_holds(tmp_path, capsys):
    data = write_class_folders(tmp_path / "pets", heldout_name="test")
    assert main(["tasks", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "3 classes" in out and "held out: split test" in out and "20×24 (36)" in out
    assert all(f"{name:<20} {12:>8} {4:>9}" in out for name in CLASSES)
    assert "input 3×20×24" in out and "resident" in out


def _corrupt(root: Path) -> str:
    (root / "train" / "green" / "003.png").write_bytes(b"not a png")
    return "green/003.png: unreadable or corrupt image"


def _empty_class(root: Path) -> str:
    (root / "train" / "zebra").mkdir()
    return "empty class folder"


def _one_class(root: Path) -> str:
    for split in ("train", "val"):
        for name in ("blue", "green"):
            shutil.rmtree(root / split / name)
    return "found 1 class (red)"


def _mixed_channels(root: Path) -> str:
    from PIL import Image

    path = root / "val" / "blue" / "002.png"
    Image.open(path).convert("L").save(path)
    return "mixed channel counts"


@pytest.mark.parametrize("damage", [_corrupt, _empty_class, _one_class, _mixed_channels])
def test_bad_folders_exit_2_in_one_line_before_the_run_directory_exists(tmp_path, capsys, damage):
    data, run = write_class_folders(tmp_path / "bad", per_class=3, heldout=3), tmp_path / "run"
    needle = damage(data)
    assert main(["train", *TINY, "--data-dir", str(data), "--out", str(run)]) == 2
    _one_line(capsys, needle)
    assert not run.exists()


def test_a_label_out_of_range_and_no_data_exit_2_in_one_line(tmp_path, capsys):
    data, run = write_saved_dataset(tmp_path / "saved", labels=[0, 1, 7, 2]), tmp_path / "run"
    assert main(["train", *TINY, "--data-dir", str(data), "--image-column", "photo", "--label-column", "kind",
                 "--out", str(run)]) == 2
    _one_line(capsys, "label 7 of row 2 is outside the 3 classes")
    assert main(["train", *TINY, "--out", str(run)]) == 2
    _one_line(capsys, "--task images needs --data-dir DIR")
    assert not run.exists()


@pytest.mark.gpu
def test_a_png_folder_trains_on_cuda_with_the_data_on_the_device(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.fail("the gpu marker needs a CUDA device (make test-gpu runs on the device machine)")
    from esper.shell.data.budget import data_budget_bytes
    from esper.shell.data.image_folder import ImageOptions
    from esper.shell.data.images_task import load_images_task

    data = write_class_folders(tmp_path / "pets")
    task = load_images_task(ImageOptions(data_dir=str(data)), device=torch.device("cuda"), data_seed=0)
    assert task.train_inputs.is_cuda and task.heldout_labels.is_cuda and data_budget_bytes("cuda", None) > 0
    cuda = [arg if arg != "cpu" else "cuda" for arg in TINY]
    assert main(["train", *cuda, "--data-dir", str(data), "--out", str(tmp_path / "run")]) == 0
