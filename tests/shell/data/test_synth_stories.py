import re

import numpy as np
import pytest
import torch

from esper.core import codec
from esper.shell.data import load_task
from esper.shell.data import synth_stories as ss

_HIS = re.compile(r"\b(he|his|him)\b", re.IGNORECASE)
_HERS = re.compile(r"\b(she|her)\b", re.IGNORECASE)


def _stories(data_seed: int, n: int = 400, split: str = "train") -> list[str]:
    return ss.generate_stories(n, ss.split_generator(data_seed, split))


def test_deterministic_from_the_data_seed() -> None:
    assert _stories(0) == _stories(0)
    assert _stories(0) != _stories(1)
    assert _stories(0) != _stories(0, split="heldout")


def test_stories_are_ascii_bytes_separated_by_eos() -> None:
    stories = _stories(0)
    stream = ss.encode(stories)
    assert stream.dtype == np.uint8
    assert int((stream == ss.EOS).sum()) == len(stories) and stream[-1] == ss.EOS
    assert all(0 < ord(c) < 128 for story in stories for c in story)
    pieces = bytes(stream).split(b"\0")[:-1]
    assert [p.decode() for p in pieces] == stories


def test_story_structure_and_vocabulary_sizes() -> None:
    assert len(ss.NAMES) == 24 and len(ss.ANIMALS) == 16 and len(ss.OBJECTS) == 20
    assert len(ss.PLACES) == 12 and len(ss.ADJECTIVES) == 20 and len(ss.VERBS) == 16
    assert len(ss.EMOTIONS) == 8 and len(ss.EVENTS) == 12
    for story in _stories(2, n=200):
        sentences = [s for s in re.split(r"(?<=\.)\s+", story) if s]
        # opening + 2–5 events + problem + resolution + 1–2 ending sentences
        assert 6 <= len(sentences) <= 11, story


def test_pronouns_follow_the_protagonists_gender() -> None:
    genders = dict(ss.NAMES)
    seen = set()
    for story in _stories(3, n=1_000):
        name = next(n for n in re.findall(r"[A-Z][a-z]+", story) if n in genders)
        gender = genders[name]
        seen.add(gender)
        wrong = _HERS if gender == "boy" else _HIS
        assert not wrong.search(story), story
    assert seen == {"girl", "boy"}


_ENDING = re.compile(r"(?:\w+ was very (\w+)\. \w+ hugged the \w+ and smiled"
                     r"|In the end, \w+ felt (\w+) and played with the \w+ again"
                     r"|\w+ felt (\w+), but \w+ knew tomorrow would be better"
                     r"|That night, \w+ was (\w+) and missed the \w+)\.$")


def test_ending_emotion_depends_on_the_resolution() -> None:
    for story in _stories(4, n=500):
        resolved = not ("was gone" in story or "could not fix" in story)
        match = _ENDING.search(story)
        assert match is not None, story
        emotion = next(group for group in match.groups() if group)
        assert emotion in (ss.GLAD if resolved else ss.UNHAPPY), story


def test_load_task_windows_and_source() -> None:
    data = load_task("synth-stories", device="cpu", block_size=64)
    x, y = data.batch("train", torch.tensor([0, 5]))
    assert x.shape == y.shape == (2, 64) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert data.train_inputs.dtype == torch.uint8  # bytes stay bytes on the device
    source = codec.encode(data.source)
    assert (source["kind"], source["id_or_path"]) == ("procedural", "synth-stories/v1")
    assert source["tokenizer"]["kind"] == "bytes" and source["tokenizer"]["vocab"] == 256
    assert data.n_classes == 256 and data.random_guess_loss == pytest.approx(5.545, abs=1e-3)
    assert data.n_train > 20_000 and data.n_heldout > 2_000  # windows, not stories
    again = load_task("synth-stories", device="cpu", block_size=64, train_size=100, val_size=10)
    assert again.source.subset and (again.n_train, again.n_heldout) == (100, 10)
    assert again.source.sha256 != data.source.sha256
