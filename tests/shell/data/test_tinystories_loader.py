from pathlib import Path

import pytest
import torch

from esper.core import codec
from esper.shell.data import DatasetNotFound, load_task, tinystories, tokenizer
from esper.shell.data import synth_stories as ss
from esper.shell.data.tokenizer import EOT


def _stories(n: int, seed: int) -> list[str]:
    # Two lines per story, as in the real files (a story may span several lines).
    return [s.replace(". ", ".\n", 1) for s in ss.generate_stories(n, ss.split_generator(seed, "train"))]


def _write_texts(folder: Path, n_train: int = 150, n_valid: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in ((tinystories.TRAIN_TXT, n_train, 0), (tinystories.VALID_TXT, n_valid, 1)):
        (folder / name).write_text("".join(f"{story}\n{EOT}\n" for story in _stories(n, seed)))
    return folder


def test_story_file_is_split_on_endoftext_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text(f"One day.\nThe end.\n{EOT}\n\n{EOT}\n  Second story.  \n{EOT}\nNo trailing marker.\n")
    assert list(tinystories.read_story_file(path)) == ["One day.\nThe end.", "Second story.",
                                                       "No trailing marker."]


def test_bpe_training_small_vocab_and_its_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stories = _stories(100, 0)
    loaded = tokenizer.bpe_tokenizer(iter(stories), vocab_size=300)
    assert loaded.info.kind == "bpe" and loaded.info.vocab <= 300
    assert loaded.info.eos_id == loaded.tokenizer.token_to_id(EOT)
    assert loaded.info.path is not None and Path(loaded.info.path).is_relative_to(tmp_path)
    ids = loaded.tokenizer.encode(stories[0], add_special_tokens=False).ids
    assert loaded.tokenizer.decode(ids) == stories[0]
    (chunk,) = list(loaded.encode_stories(stories[:3]))
    assert chunk.dtype.name == "uint16" and int((chunk == loaded.info.eos_id).sum()) == 3

    def no_training(*_args: object) -> None:
        raise AssertionError("the cached tokenizer should have been reused")

    monkeypatch.setattr(tokenizer, "_train_bpe", no_training)
    again = tokenizer.bpe_tokenizer(iter(stories), vocab_size=300)
    assert again.info == loaded.info


def test_load_task_from_text_files_with_bpe(tmp_path: Path, isolated_data_env: Path) -> None:
    folder = _write_texts(tmp_path / "ts")
    data = load_task("tinystories", device="cpu", data_dir=folder, tokenizer="bpe", block_size=16)
    source = codec.encode(data.source)
    assert (source["kind"], source["id_or_path"]) == ("local", str(folder))
    assert source["tokenizer"]["kind"] == "bpe" and data.n_classes == source["tokenizer"]["vocab"]
    x, y = data.batch("train", next(data.train_batches(4, torch.Generator().manual_seed(0))))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    eos = source["tokenizer"]["eos_id"]
    assert int((data.train_inputs == eos).sum()) > 100  # stories joined with EOS
    held_x, held_y = data.batch("heldout", next(data.heldout_batches(10_000)))
    assert held_x.shape[0] == data.n_heldout and torch.equal(held_x[:, 1:], held_y[:, :-1])
    assert any(isolated_data_env.joinpath("esper", "tokens").glob("*.u16"))  # ids cached
    again = load_task("tinystories", device="cpu", data_dir=folder, tokenizer="bpe", block_size=16)
    assert again.source == data.source
    subset = load_task("tinystories", device="cpu", data_dir=folder, tokenizer="bpe", block_size=16,
                       train_size=5, val_size=2)
    assert subset.source.subset and (subset.n_train, subset.n_heldout) == (5, 2)
    x, y = subset.batch("train", torch.arange(5))
    assert torch.equal(x[:, 1:], y[:, :-1]) and subset.source.sha256 != data.source.sha256


def test_heldout_is_the_first_windows_of_validation(tmp_path: Path) -> None:
    folder = _write_texts(tmp_path / "ts")
    everything = tinystories.load_tinystories(folder, "bpe", block=8, heldout_windows=10_000)
    first = tinystories.load_tinystories(folder, "bpe", block=8, heldout_windows=5)
    assert len(first.heldout_tokens) == 5 * 8 + 1
    assert list(first.heldout_tokens) == list(everything.heldout_tokens[:41])
    assert len(everything.heldout_tokens) < 10_000 * 8  # the whole (small) validation split


def test_auto_falls_back_to_bpe_and_gpt2_forced_is_an_error(tmp_path: Path) -> None:
    folder = _write_texts(tmp_path / "ts", n_train=60, n_valid=20)
    data = load_task("tinystories", device="cpu", data_dir=folder, tokenizer="auto", block_size=8)
    assert data.source.tokenizer is not None and data.source.tokenizer.kind == "bpe"
    with pytest.raises(DatasetNotFound, match="gpt2 tokenizer is not in the local HF cache"):
        load_task("tinystories", device="cpu", data_dir=folder, tokenizer="gpt2", block_size=8)


def test_save_to_disk_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    splits = {"train": _stories(80, 0), "validation": _stories(20, 1)}
    saved = datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v}) for k, v in splits.items()})
    saved.save_to_disk(str(tmp_path / "saved"))
    data = load_task("tinystories", device="cpu", data_dir=tmp_path / "saved", tokenizer="bpe", block_size=8)
    assert data.source.kind == "local" and data.n_train > 0 and data.n_heldout > 0


def test_not_found_names_the_places_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as info:
        load_task("tinystories", device="cpu", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and f"--data-dir {tmp_path}" in message
    assert 'datasets.load_dataset("roneneldan/TinyStories")' in message and "synth-stories" in message
