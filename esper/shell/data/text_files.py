"""`--task text --data-dir DIR` (docs/runtime.md §5.6): the user's own text on tinystories' path.

DIR is one of
- a folder of `.txt` files. Its splits are those `datasets` itself resolves from a data folder
  (`train/`, `val/` | `valid/` | `validation/` | `dev/`, `test/` subfolders, or names such as
  `x-train.txt`; otherwise every file is `train`); only `.txt` files count. Each file is one
  document, read whole by the `text` builder (`sample_by="document"`, streamed, so the corpus is
  not copied into the HF cache);
- a `datasets` `save_to_disk` folder (a `DatasetDict` or one `Dataset`): one document per row of
  its string column `--text-column` (default "text").

Held-out split: the given one (validation, else test). Without one, `ceil(10 %)` of the documents
(files or rows, at least one) are drawn from the data seed: the first of a permutation drawn by
`SeedSequence([data_seed, 4])`. A lone document is cut instead: its first 90 % of characters
(back to the line break before the cut, when there is one) train, the rest is held out.

Tokens as tinystories (`tinystories.tokenised`): EOS after each non-empty document; window k of a
split holds tokens t = k·block … k·block + block, input x_t = token[t], target y_t = token[t + 1].
The task's preset is `DATA_TASKS["text"]` with the tokenizer's vocabulary and the window length.
"""

import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from esper.core.tasks import TaskPreset
from esper.shell.data import hf
from esper.shell.data.errors import DataError, DatasetNotFound
from esper.shell.data.source import TokenizerInfo, cache_root, files_sha256, text_sha256
from esper.shell.data.tinystories import RawText, StorySource, tokenised

TEXT_SUFFIX = ".txt"
HELDOUT_FRACTION = 0.1
_HELDOUT_STREAM = 4  # SeedSequence([data_seed, 4]) draws the held-out documents (3: loading's subsets)
_HELDOUT_FILE_SPLITS = ("validation", "test")  # datasets' split names; val/valid/dev are "validation"
_HELDOUT_ROW_SPLITS = ("validation", "valid", "val", "test")
_FORMAT = "esper-text/v1"

Documents = Callable[[], Iterator[str]]


@attrs.frozen(kw_only=True, eq=False)
class _Split:
    """Both splits' documents, how the held-out one was chosen, and what identifies them."""

    train: Documents
    heldout: Documents
    rule: str
    identity: object


def derived_preset(template: TaskPreset, tokenizer: TokenizerInfo, block: int) -> TaskPreset:
    """The run's preset: the template with the tokenizer's vocabulary and the window length."""
    return attrs.evolve(template, n_classes=tokenizer.vocab, input_shape=(block,))


def load_text(data_dir: Path | None, *, column: str, data_seed: int, tokenizer_choice: str, block: int,
              heldout_windows: int) -> RawText:
    """Token streams of DIR's train split and of the first `heldout_windows` windows of its held-out split;
    `DataError` (one line) for data that cannot make one window of each."""
    source, rule = find_text(data_dir, column, data_seed)
    raw = tokenised(source, tokenizer_choice, block, heldout_windows)
    for name, tokens in (("train split", raw.train_tokens), (f"held-out split ({rule})", raw.heldout_tokens)):
        if len(tokens) < block + 1:
            raise DataError(f"the {name} of {source.id_or_path} holds {len(tokens)} tokens, fewer than one "
                            f"window of {block + 1}; add text to it, or pick a host with a shorter block (--host tiny)")
    return raw


def find_text(data_dir: Path | None, column: str, data_seed: int) -> tuple[StorySource, str]:
    """DIR's documents as a story source, and the rule that chose its held-out split."""
    if data_dir is None:
        raise DatasetNotFound("--task text needs --data-dir DIR: a folder of .txt files or a datasets "
                              "save_to_disk folder")
    if not data_dir.is_dir():
        raise DatasetNotFound(f"--data-dir {data_dir} is not a folder (of .txt files or a save_to_disk dataset)")
    split = _saved_split(data_dir, column, data_seed) if hf.is_saved_dataset(data_dir) else _file_split(
        data_dir, data_seed)
    fingerprint = text_sha256(_FORMAT, split.identity, split.rule)
    source = StorySource(train=split.train, valid=split.heldout, kind="local", id_or_path=str(data_dir),
                         fingerprint=fingerprint)
    return source, split.rule


def drawn_heldout(n: int, data_seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices of n ≥ 2 documents, each sorted: ceil(10 %) held out, at least one kept."""
    word = np.random.SeedSequence([data_seed, _HELDOUT_STREAM]).generate_state(1, np.uint64)[0]
    order = np.random.default_rng(int(word)).permutation(n)
    cut = min(n - 1, max(1, math.ceil(HELDOUT_FRACTION * n)))
    return sorted(int(i) for i in order[cut:]), sorted(int(i) for i in order[:cut])


def cut_document(text: str) -> tuple[str, str]:
    """A lone document's first 90 % of characters and the rest, cut after the last line break before
    that point when there is one (so no line is split)."""
    at = int(len(text) * (1 - HELDOUT_FRACTION))
    line_end = text.rfind("\n", 0, at)
    at = line_end + 1 if line_end > 0 else at
    return text[:at], text[at:]


def _non_empty(texts: Iterable[str], where: str) -> Iterator[str]:
    """Documents with any non-space character (an empty file adds no lone EOS); undecodable text is
    a DataError naming `where`."""
    try:
        yield from (text for text in texts if text.strip())
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start} of a file)") from None


def _lone(documents: Documents, rule: str, identity: object) -> _Split:
    """One document and no held-out split: `cut_document` makes both."""
    text = "".join(documents())
    head, tail = cut_document(text)
    return _Split(train=lambda: iter([head]), heldout=lambda: iter([tail]), rule=rule, identity=identity)


# --- a folder of .txt files ---------------------------------------------------------------------


def _txt_files(data_dir: Path) -> dict[str, list[Path]]:
    """{split: sorted .txt files} as `datasets` resolves DIR's layout (splits with no .txt file left out)."""
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    try:
        resolved = DataFilesDict.from_patterns(get_data_patterns(str(data_dir)), base_path=str(data_dir))
    except (EmptyDatasetError, FileNotFoundError):
        resolved = {}
    splits = {str(name): sorted(Path(f) for f in files if f.lower().endswith(TEXT_SUFFIX))
              for name, files in resolved.items()}
    return {name: files for name, files in splits.items() if files}


def _read_files(files: list[Path], where: str) -> Documents:
    """Each file's whole text, in order, through the `text` builder (streamed: no copy of the corpus; the
    builder's lock files go under esper's cache, not the user's HF cache)."""
    def documents() -> Iterator[str]:
        import datasets

        with hf.hub_offline():
            rows = datasets.load_dataset("text", data_files=[str(f) for f in files], sample_by="document",
                                         streaming=True, split="train", cache_dir=str(cache_root() / "datasets"))
        return _non_empty((row["text"] for row in rows), where)

    return documents


def _file_split(data_dir: Path, data_seed: int) -> _Split:
    data_dir = data_dir.resolve()  # datasets resolves the files to absolute paths
    splits = _txt_files(data_dir)
    train = splits.get("train", [])
    if not train:
        found = f"; it has .txt files only in split(s) {sorted(splits)}" if splits else ""
        raise DataError(f"--data-dir {data_dir} holds no training .txt files{found} (expected *.txt, or "
                        "train/ with val/ or test/ beside it)")
    if all(path.stat().st_size == 0 for files in splits.values() for path in files):
        raise DataError(f"every .txt file under {data_dir} is empty")
    given = next((name for name in _HELDOUT_FILE_SPLITS if name in splits), None)
    if given is not None:
        return _files_as_split(data_dir, train, splits[given], f"the {given} files")
    if len(train) == 1:
        rule = f"the last 10 % of {train[0].name}"
        return _lone(_read_files(train, str(train[0])), rule, _file_identity(data_dir, train, []))
    keep, out = drawn_heldout(len(train), data_seed)
    return _files_as_split(data_dir, [train[i] for i in keep], [train[i] for i in out],
                           f"{len(out)} of {len(train)} files drawn by data seed {data_seed}")


def _files_as_split(data_dir: Path, train: list[Path], heldout: list[Path], rule: str) -> _Split:
    return _Split(train=_read_files(train, f"{data_dir} train split"),
                  heldout=_read_files(heldout, f"{data_dir} held-out split"), rule=rule,
                  identity=_file_identity(data_dir, train, heldout))


def _file_identity(data_dir: Path, train: list[Path], heldout: list[Path]) -> object:
    """Which file is in which split (relative paths) and every file's content."""
    return {"train": [str(p.relative_to(data_dir)) for p in train],
            "heldout": [str(p.relative_to(data_dir)) for p in heldout],
            "sha256": files_sha256([*train, *heldout])}


# --- a save_to_disk dataset ---------------------------------------------------------------------


def _saved_split(data_dir: Path, column: str, data_seed: int) -> _Split:
    loaded: Any = hf.load_saved(data_dir)
    splits = dict(loaded) if hasattr(loaded, "keys") else {"train": loaded}
    if "train" not in splits:
        raise DataError(f"{data_dir} has splits {sorted(splits)}; expected a train split")
    for name, dataset in splits.items():
        _check_column(dataset, column, f"{data_dir} ({name})")
    train = splits["train"]
    given = next((name for name in _HELDOUT_ROW_SPLITS if name in splits), None)
    where = str(data_dir)
    if given is not None:
        heldout, rule = splits[given], f"the {given} split"
    elif len(train) >= 2:
        keep, out = drawn_heldout(len(train), data_seed)
        train, heldout = train.select(keep, keep_in_memory=True), train.select(out, keep_in_memory=True)
        rule = f"{len(out)} of {len(keep) + len(out)} rows drawn by data seed {data_seed}"
    else:
        identity = (hf.dataset_fingerprint(where, train), column)
        return _lone(_rows(train, column, where), "the last 10 % of its one row", identity)
    return _Split(train=_rows(train, column, f"{where} train split"),
                  heldout=_rows(heldout, column, f"{where} held-out split"), rule=rule,
                  identity=(hf.dataset_fingerprint(where, train, heldout), column))


def _check_column(dataset: Any, column: str, where: str) -> None:
    if column not in dataset.column_names:
        raise DataError(f"{where} has no text column {column!r} (its columns: {', '.join(dataset.column_names)}); "
                        "name one with --text-column")
    dtype = getattr(dataset.features[column], "dtype", None)
    if dtype not in ("string", "large_string"):
        raise DataError(f"{where}: column {column!r} holds {dataset.features[column]}, not text; "
                        "name a string column with --text-column")


def _rows(dataset: Any, column: str, where: str) -> Documents:
    return lambda: _non_empty(hf.texts(dataset, column), where)
