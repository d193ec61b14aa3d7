"""`--task text --data-dir DIR` (docs/runtime.md §5.6): the layouts it reads, the derived preset, the
held-out rules and the bad-data errors, on small folders written here."""

from pathlib import Path

import pytest
import torch

from esper.core.tasks import DATA_TASKS
from esper.shell.data import DataError, DatasetNotFound, load_task, text_files
from esper.shell.data import synth_stories as ss

BLOCK = 16


def stories(n: int, seed: int = 0) -> list[str]:
    return ss.generate_stories(n, ss.split_generator(seed, "train"))


def write_folder(folder: Path, n_files: int = 6, per_file: int = 12, seed: int = 0) -> Path:
    """n_files .txt files of `per_file` stories each (a few KB in all), blank lines between stories."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = stories(n_files * per_file, seed)
    for i in range(n_files):
        (folder / f"doc{i:02d}.txt").write_text("\n\n".join(texts[i * per_file:(i + 1) * per_file]) + "\n")
    return folder


def load(folder: Path, **kwargs: object):
    return load_task("text", device="cpu", data_dir=folder, tokenizer="bpe", block_size=BLOCK, **kwargs)


def test_a_flat_folder_trains_on_drawn_files_with_a_preset_derived_from_the_tokenizer(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "flat")
    (folder / "notes.md").write_text("not a text file of the corpus")
    data = load(folder)
    template = DATA_TASKS["text"]
    tokenizer = data.source.tokenizer
    assert tokenizer is not None and tokenizer.kind == "bpe" and data.preset.name == "text"
    assert data.preset.n_classes == tokenizer.vocab == data.n_classes != template.n_classes
    assert data.preset.input_shape == (BLOCK,) and data.preset.host == template.host == "synth-stories"
    assert (data.source.kind, data.source.id_or_path) == ("local", str(folder))
    x, y = data.batch("train", next(data.train_batches(4, torch.Generator().manual_seed(0))))
    assert x.shape == (4, BLOCK) and torch.equal(x[:, 1:], y[:, :-1])
    assert int((data.train_inputs == tokenizer.eos_id).sum()) == 5 - 1  # 5 train files, EOS after each
    _, rule = text_files.find_text(folder, "text", 0)
    assert rule == "1 of 6 files drawn by data seed 0"
    assert load(folder).source == data.source  # the same data: the same record (and preset)
    reseeded = {load(folder, data_seed=seed).source.fingerprint for seed in range(4)}
    assert len(reseeded) > 1  # the data seed draws the held-out file


def test_the_text_template_agrees_with_its_host_and_is_a_known_task() -> None:
    from esper.core.tasks import TASKS, task_preset
    from esper.shell.nets.hosts import host_config

    template = task_preset("text")
    host = host_config(template.host)
    assert template is DATA_TASKS["text"] and "text" not in TASKS
    assert (host.block_size, host.vocab_size) == (template.block_size, template.n_classes)
    assert (template.modality, template.topology, template.size_unit) == ("text", "transformer", "windows")


def test_drawn_heldout_is_a_seeded_partition_with_at_least_one_document_each_way() -> None:
    for n in (2, 3, 10, 11, 95):
        train, heldout = text_files.drawn_heldout(n, 7)
        assert sorted(train + heldout) == list(range(n)) and train == sorted(train)
        assert len(heldout) == min(n - 1, -(-n // 10)) and len(train) >= 1
        assert text_files.drawn_heldout(n, 7) == (train, heldout)
    assert len({tuple(text_files.drawn_heldout(20, seed)[1]) for seed in range(6)}) > 1


def test_train_and_val_subfolders_are_the_splits_and_the_val_text_is_the_heldout(tmp_path: Path) -> None:
    root = tmp_path / "split"
    write_folder(root / "train", n_files=3)
    write_folder(root / "val", n_files=1, seed=1)
    _, rule = text_files.find_text(root, "text", 0)
    assert rule == "the validation files"
    data = load(root)
    (root / "val" / "doc00.txt").write_text("\n\n".join(stories(12, 2)))  # other held-out text
    changed = load(root)
    assert changed.source.fingerprint != data.source.fingerprint and changed.source.sha256 != data.source.sha256
    assert torch.equal(changed.train_inputs, data.train_inputs)  # the same tokenizer, the same train split


def test_a_lone_file_is_cut_at_90_percent_on_a_line_break(tmp_path: Path) -> None:
    head, tail = text_files.cut_document("a" * 50 + "\n" + "b" * 49)
    assert (head, tail) == ("a" * 50 + "\n", "b" * 49)
    assert text_files.cut_document("x" * 100) == ("x" * 90, "x" * 10)
    folder = write_folder(tmp_path / "one", n_files=1, per_file=60)
    _, rule = text_files.find_text(folder, "text", 0)
    assert rule == "the last 10 % of doc00.txt"
    data = load(folder)
    assert data.n_train > 5 * data.n_heldout > 0


def test_a_saved_dataset_reads_its_text_column(tmp_path: Path) -> None:
    import datasets

    texts = stories(40)
    rows = datasets.Dataset.from_dict({"body": texts, "n": list(range(len(texts)))})
    rows.save_to_disk(str(tmp_path / "one"))  # one Dataset: 10 % of rows drawn
    datasets.DatasetDict({"train": rows.select(range(30)), "validation": rows.select(range(30, 40))}).save_to_disk(
        str(tmp_path / "dict"))
    drawn = load(tmp_path / "one", text_column="body")
    assert text_files.find_text(tmp_path / "one", "body", 0)[1] == "4 of 40 rows drawn by data seed 0"
    given = load(tmp_path / "dict", text_column="body")
    assert text_files.find_text(tmp_path / "dict", "body", 0)[1] == "the validation split"
    assert drawn.n_train > given.n_train > 0 and given.n_heldout > 0
    with pytest.raises(DataError, match=r"no text column 'text' \(its columns: body, n\); name one with --text-column"):
        load(tmp_path / "dict")
    with pytest.raises(DataError, match=r"column 'n' holds .*not text"):
        load(tmp_path / "dict", text_column="n")


def _no_txt(folder: Path) -> None:
    (folder / "readme.md").write_text("no text files here")


def _empty_files(folder: Path) -> None:
    for name in ("a.txt", "b.txt"):
        (folder / name).write_text("")


def _tiny_heldout(folder: Path) -> None:
    write_folder(folder / "train", n_files=2)
    (folder / "val").mkdir()
    (folder / "val" / "v.txt").write_text("Too short.")


def _test_split_only(folder: Path) -> None:
    write_folder(folder / "test", n_files=2)


def _not_utf8(folder: Path) -> None:
    write_folder(folder, n_files=2)
    (folder / "bad.txt").write_bytes(b"\xff\xfe not utf-8")


@pytest.mark.parametrize(("make", "needle"), [
    (_no_txt, "holds no training .txt files"),
    (_empty_files, "every .txt file under"),
    (_tiny_heldout, "held-out split (the validation files) of"),
    (_test_split_only, "only in split(s) ['test']"),
    (_not_utf8, "not UTF-8 text"),
])
def test_bad_folders_are_one_line_data_errors(tmp_path: Path, make, needle: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    make(folder)
    with pytest.raises(DataError) as info:
        load(folder)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_missing_folder_or_no_data_dir_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match="needs --data-dir DIR"):
        load_task("text", device="cpu", tokenizer="bpe")
    with pytest.raises(DatasetNotFound, match="is not a folder"):
        load(tmp_path / "absent")
