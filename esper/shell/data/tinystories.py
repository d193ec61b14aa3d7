"""TinyStories (docs/runtime.md §5.2): `--data-dir` (the two `.txt` files or a `save_to_disk` folder),
then HF `roneneldan/TinyStories` (cache, or the hub when online).

Stories are tokenised once, each followed by EOS, and the ids cached as a uint16 file under
`$XDG_CACHE_HOME/esper/tokens/` keyed by the source fingerprint and the tokenizer's sha256; runs
memory-map it. The held-out split needs only its first 4,096 windows, so only that much
validation text is tokenised.
"""

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import numpy as np

from esper.shell.data import hf
from esper.shell.data.errors import DataError, DatasetNotFound
from esper.shell.data.source import TokenizerInfo, cache_root, files_sha256
from esper.shell.data.tokenizer import EOT, LoadedTokenizer, select_tokenizer

HF_REPO = "roneneldan/TinyStories"
TRAIN_TXT, VALID_TXT = "TinyStories-train.txt", "TinyStories-valid.txt"
ONLINE_CALL = f"python -c 'import datasets; datasets.load_dataset(\"{HF_REPO}\")'"


@attrs.frozen(kw_only=True, eq=False)
class StorySource:
    """Where the stories are; `train()` / `valid()` stream them afresh on each call."""

    train: Callable[[], Iterator[str]]
    valid: Callable[[], Iterator[str]]
    kind: str
    id_or_path: str
    fingerprint: str


@attrs.frozen(kw_only=True, eq=False)
class RawText:
    """Token streams (each story followed by EOS) of both splits and where they came from."""

    train_tokens: np.ndarray
    heldout_tokens: np.ndarray
    kind: str
    id_or_path: str
    fingerprint: str
    tokenizer: TokenizerInfo


def read_story_file(path: Path) -> Iterator[str]:
    """Stories of a TinyStories `.txt` file: blocks of lines separated by `<|endoftext|>` lines."""
    lines: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip() == EOT:
                if story := "\n".join(lines).strip():
                    yield story
                lines = []
            else:
                lines.append(line.rstrip("\n"))
    if story := "\n".join(lines).strip():
        yield story


def find_stories(data_dir: Path | None) -> StorySource:
    if data_dir is not None:
        train_path, valid_path = data_dir / TRAIN_TXT, data_dir / VALID_TXT
        if train_path.is_file() and valid_path.is_file():
            return StorySource(train=lambda: read_story_file(train_path),
                               valid=lambda: read_story_file(valid_path), kind="local",
                               id_or_path=str(data_dir),
                               fingerprint=files_sha256([train_path, valid_path]))
        if hf.is_saved_dataset(data_dir):
            return _hf_source(hf.load_saved(data_dir), str(data_dir), "local")
    try:
        dataset_dict, _ = hf.load_hub_cached_then_online(HF_REPO)
    except hf.HubUnavailable as exc:
        raise DatasetNotFound(_not_found(data_dir, str(exc))) from None
    return _hf_source(dataset_dict, HF_REPO, "hf")


def _hf_source(dataset_dict: object, id_or_path: str, kind: str) -> StorySource:
    train = hf.split_of(dataset_dict, ("train",), id_or_path)
    valid = hf.split_of(dataset_dict, ("validation", "valid", "test"), id_or_path)
    return StorySource(train=lambda: hf.texts(train), valid=lambda: hf.texts(valid), kind=kind,
                       id_or_path=id_or_path, fingerprint=hf.dataset_fingerprint(id_or_path, train, valid))


def _not_found(data_dir: Path | None, cause: str) -> str:
    looked = (f"--data-dir {data_dir} ({TRAIN_TXT} + {VALID_TXT} or a save_to_disk folder)"
              if data_dir is not None else "--data-dir (not given)")
    where = "the HF cache" if hf.offline_requested() else "the HF cache or hub"
    return (f"tinystories not found in {looked} or {where} ({HF_REPO}: {cause}); run {ONLINE_CALL} "
            f"once online, or pass --data-dir, or use the offline task --task synth-stories")


def token_stream(stories: Callable[[], Iterator[str]], tokenizer: LoadedTokenizer, key: str,
                 max_tokens: int | None = None) -> np.ndarray:
    """The uint16 ids of `stories` (EOS after each), at least `max_tokens` of them when given
    (None: all), memory-mapped from the cache, tokenising on a miss."""
    if tokenizer.info.vocab > np.iinfo(np.uint16).max + 1:
        raise DataError(f"a vocabulary of {tokenizer.info.vocab} does not fit uint16 token ids")
    path = cache_root() / "tokens" / f"{key}-{max_tokens or 'all'}.u16"
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        _write_tokens(stories(), tokenizer, path, max_tokens)
    count = json.loads(meta.read_text())["count"]
    if count == 0:
        return np.zeros(0, dtype=np.uint16)
    # Copy-on-write mapping: writable for torch.from_numpy, never writes back to the cache.
    return np.memmap(path, dtype=np.uint16, mode="c", shape=(count,))


def _write_tokens(stories: Iterator[str], tokenizer: LoadedTokenizer, path: Path,
                  max_tokens: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    count = 0
    with os.fdopen(handle, "wb") as out:
        for ids in tokenizer.encode_stories(stories):
            ids.tofile(out)
            count += len(ids)
            if max_tokens is not None and count >= max_tokens:
                break
    os.replace(staging, path)
    path.with_suffix(".json").write_text(json.dumps({"count": count, "dtype": "uint16"}))


def load_tinystories(data_dir: Path | None, tokenizer_choice: str, block: int,
                     heldout_windows: int) -> RawText:
    """Token streams of the train split (all of it) and of the first `heldout_windows` windows of
    `block + 1` tokens (stride `block`) of validation."""
    return tokenised(find_stories(data_dir), tokenizer_choice, block, heldout_windows)


def tokenised(source: StorySource, tokenizer_choice: str, block: int, heldout_windows: int) -> RawText:
    """The token streams of any story source (also `--task text`'s, esper.shell.data.text_files)."""
    tokenizer = select_tokenizer(tokenizer_choice, source.train)
    key = f"{source.fingerprint[:24]}-{tokenizer.info.sha256[:16]}"
    train = token_stream(source.train, tokenizer, f"{key}-train")
    heldout = token_stream(source.valid, tokenizer, f"{key}-valid", heldout_windows * block + 1)
    return RawText(train_tokens=train, heldout_tokens=heldout[:heldout_windows * block + 1], kind=source.kind,
                   id_or_path=source.id_or_path, fingerprint=source.fingerprint, tokenizer=tokenizer.info)
