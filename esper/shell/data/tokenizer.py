"""The `tinystories` tokenizer (docs/runtime.md §5.2): GPT-2 from the local HF cache, or a byte-level BPE
trained on the first 100,000 training stories and cached by sha256 under `$XDG_CACHE_HOME/esper/`.

Both end up as a `tokenizers.Tokenizer`, so encoding is one code path; `transformers` and
`tokenizers` are imported lazily.
"""

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import attrs
import numpy as np

from esper.shell.data.errors import DatasetNotFound
from esper.shell.data.source import TokenizerInfo, cache_root

EOT = "<|endoftext|>"
CHOICES = ("auto", "gpt2", "bpe")
BPE_VOCAB = 8_192
BPE_MIN_FREQUENCY = 2
BPE_STORIES = 100_000
_ENCODE_BATCH = 1_024
GPT2_CALL = "python -c 'import transformers; transformers.AutoTokenizer.from_pretrained(\"gpt2\")'"


@attrs.frozen(kw_only=True, eq=False)
class LoadedTokenizer:
    tokenizer: Any  # tokenizers.Tokenizer
    info: TokenizerInfo

    def encode_stories(self, stories: Iterable[str]) -> Iterator[np.ndarray]:
        """Token ids of the stories, each followed by EOS, in batches (uint16: both vocabularies fit)."""
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        iterator = iter(stories)
        while batch := list(islice(iterator, _ENCODE_BATCH)):
            ids: list[int] = []
            for encoding in encode(batch, add_special_tokens=False):
                ids.extend(encoding.ids)
                ids.append(self.info.eos_id)
            yield np.asarray(ids, dtype=np.uint16)


def _sha256_of(tokenizer: Any) -> str:
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def gpt2_tokenizer() -> LoadedTokenizer | None:
    """GPT-2 from the local HF cache only, or None when it is not there."""
    from transformers import AutoTokenizer

    try:
        pretrained = AutoTokenizer.from_pretrained("gpt2", local_files_only=True)
    except (OSError, ValueError):
        return None
    backend = pretrained.backend_tokenizer
    info = TokenizerInfo(kind="gpt2", vocab=len(pretrained), sha256=_sha256_of(backend),
                         eos_id=int(pretrained.eos_token_id))
    return LoadedTokenizer(tokenizer=backend, info=info)


def bpe_tokenizer(train_stories: Iterable[str], *, vocab_size: int = BPE_VOCAB,
                  n_stories: int = BPE_STORIES) -> LoadedTokenizer:
    """A byte-level BPE trained on the first `n_stories` stories; reused from the cache when the
    same stories and settings were trained on before."""
    from tokenizers import Tokenizer

    corpus = list(islice(train_stories, n_stories))
    digest = hashlib.sha256(f"bpe/{vocab_size}/{BPE_MIN_FREQUENCY}/{EOT}".encode())
    for story in corpus:
        digest.update(story.encode() + b"\0")
    path = cache_root() / "tokenizers" / f"bpe-{digest.hexdigest()[:32]}.json"
    if not path.is_file():
        _train_bpe(corpus, vocab_size, path)
    tokenizer = Tokenizer.from_file(str(path))
    info = TokenizerInfo(kind="bpe", vocab=tokenizer.get_vocab_size(), sha256=_sha256_of(tokenizer),
                         eos_id=int(tokenizer.token_to_id(EOT)), path=str(path))
    return LoadedTokenizer(tokenizer=tokenizer, info=info)


def _train_bpe(corpus: list[str], vocab_size: int, path: Any) -> None:
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=BPE_MIN_FREQUENCY,
                                special_tokens=[EOT], show_progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".bpe.", suffix=".json", dir=path.parent)
    os.close(handle)
    trainer.save(staging)
    os.replace(staging, path)  # atomic: a concurrent run never reads half a file


def select_tokenizer(choice: str, train_stories: Any) -> LoadedTokenizer:
    """`auto`: GPT-2 if cached locally, else BPE; `gpt2` / `bpe` force one. `train_stories` is a
    zero-argument callable returning the training stories (only read when BPE is used)."""
    if choice not in CHOICES:
        raise ValueError(f"unknown tokenizer {choice!r}; expected one of {CHOICES}")
    if choice in ("auto", "gpt2"):
        loaded = gpt2_tokenizer()
        if loaded is not None:
            return loaded
        if choice == "gpt2":
            raise DatasetNotFound(f"the gpt2 tokenizer is not in the local HF cache; run {GPT2_CALL} "
                                  "once online, or pass --tokenizer bpe")
    return bpe_tokenizer(train_stories())
