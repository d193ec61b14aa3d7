"""`synth-stories/v1`: short children's stories from a probabilistic grammar (docs/runtime.md §5.3).

A story: an opening, 2–5 events from 12 templates, a problem and its resolution naming the same
object, and an ending whose emotion depends on whether the problem was resolved; pronouns follow
the protagonist's gender. Tokens are bytes (ASCII); stories are separated by byte 0 (EOS), which
never occurs inside a story.

Randomness: each story consumes a fixed row of float64 uniforms drawn from one CPU generator per
split (`SeedSequence([data_seed, 2, split])`), so the text depends on nothing but the seed. Any
change that alters the text must bump `GENERATOR`.
"""

from collections.abc import Sequence

import numpy as np
import torch

GENERATOR = "synth-stories/v1"
EOS = 0
SPLITS = {"train": 0, "heldout": 1}
_DRAWS_PER_STORY = 96  # upper bound on the uniforms one story consumes (at most 73 today)

GIRLS = ("Lily", "Mia", "Emma", "Sara", "Anna", "Lucy", "Zoe", "Ella", "Ruby", "Nora", "Rosa", "Ivy")
BOYS = ("Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Finn", "Owen", "Noah", "Eli", "Luke", "Theo")
NAMES: tuple[tuple[str, str], ...] = tuple((n, "girl") for n in GIRLS) + tuple((n, "boy") for n in BOYS)
ANIMALS = ("dog", "cat", "bird", "rabbit", "duck", "frog", "fox", "bear", "mouse", "horse", "cow", "pig",
           "sheep", "owl", "turtle", "squirrel")
OBJECTS = ("ball", "kite", "hat", "book", "box", "cup", "car", "doll", "drum", "boat", "key", "shoe",
           "blanket", "balloon", "bucket", "spoon", "crayon", "sock", "bell", "train")
PLACES = ("park", "garden", "beach", "forest", "farm", "school", "river", "kitchen", "hill", "lake", "zoo",
          "yard")
ADJECTIVES = ("big", "small", "red", "blue", "green", "yellow", "shiny", "soft", "old", "new", "funny",
              "happy", "little", "tall", "bright", "warm", "pretty", "round", "fluffy", "quiet")
VERBS: tuple[tuple[str, str], ...] = (
    ("play", "played"), ("jump", "jumped"), ("run", "ran"), ("sing", "sang"), ("draw", "drew"),
    ("read", "read"), ("swim", "swam"), ("climb", "climbed"), ("dance", "danced"), ("walk", "walked"),
    ("hop", "hopped"), ("build", "built"), ("paint", "painted"), ("look", "looked"), ("laugh", "laughed"),
    ("throw", "threw"))
EMOTIONS = ("happy", "proud", "excited", "calm", "sad", "scared", "angry", "tired")
GLAD, UNHAPPY = EMOTIONS[:4], EMOTIONS[4:]
PRONOUNS = {"girl": ("she", "her", "her"), "boy": ("he", "his", "him")}  # subject, possessive, object

OPENINGS = (
    "Once upon a time, there was a {adj} {kind} named {name}.",
    "One day, {name} went to the {place}.",
    "{name} was a {adj} {kind} who liked to {verb}.",
)
EVENTS = (
    "{P} saw a {adj} {animal} in the {place}.",
    "{P} liked to {verb} with {pos} {object}.",
    "The {animal} wanted to {verb} too.",
    "{P} {past} with the {animal} all day.",
    "{P} found a {adj} {object} near the {place}.",
    "{name} gave the {animal} a {adj} {object}.",
    "{P} and the {animal} went to the {place}.",
    "{P} {past} and {past2} until the sun went down.",
    "The {animal} looked at {obj} and smiled.",
    "{name} told {pos} mom about the {adj} {animal}.",
    "It was a {adj} day at the {place}.",
    "{P} felt {emotion} when {p} saw the {animal}.",
)
PROBLEMS = (
    "But then {pos} {thing} was lost.",
    "Suddenly, {pos} {thing} broke.",
    "Then the {animal} took {pos} {thing} away.",
)
RESOLVED = (
    "{name} looked everywhere and found the {thing} under the {adj} {object}.",
    "The {animal} helped {obj} get the {thing} back.",
    "{P} fixed the {thing} with {pos} dad.",
)
UNRESOLVED = (
    "{P} looked everywhere, but the {thing} was gone.",
    "{P} could not fix the {thing}.",
)
ENDINGS_GLAD = ("{name} was very {emotion}. {P} hugged the {thing} and smiled.",
                "In the end, {name} felt {emotion} and played with the {thing} again.")
ENDINGS_UNHAPPY = ("{name} felt {emotion}, but {p} knew tomorrow would be better.",
                   "That night, {name} was {emotion} and missed the {thing}.")
RESOLVE_PROBABILITY = 0.7


def split_generator(data_seed: int, split: str) -> torch.Generator:
    word = np.random.SeedSequence([data_seed, 2, SPLITS[split]]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(word))


def generate_stories(n: int, generator: torch.Generator) -> list[str]:
    """n stories, each a function of its own row of uniforms."""
    rows = torch.rand((n, _DRAWS_PER_STORY), generator=generator, dtype=torch.float64).tolist()
    return [_story(row) for row in rows]


def encode(stories: Sequence[str]) -> np.ndarray:
    """Bytes of every story, each followed by EOS (byte 0), as one uint8 stream."""
    return np.frombuffer(b"".join(s.encode("ascii") + bytes([EOS]) for s in stories), dtype=np.uint8)


class _Draws:
    """Consumes one story's uniforms in order; picking from k options maps u to floor(u·k)."""

    def __init__(self, row: list[float]) -> None:
        self._row, self._next = row, 0

    def uniform(self) -> float:
        value = self._row[self._next]
        self._next += 1
        return value

    def pick(self, options: Sequence[str]) -> str:
        return options[min(int(self.uniform() * len(options)), len(options) - 1)]


def _story(row: list[float]) -> str:
    draws = _Draws(row)
    name, kind = NAMES[min(int(draws.uniform() * len(NAMES)), len(NAMES) - 1)]
    subject, possessive, objective = PRONOUNS[kind]
    fixed = {"name": name, "kind": kind, "P": subject.capitalize(), "p": subject, "pos": possessive,
             "obj": objective, "thing": draws.pick(OBJECTS)}

    def fill(template: str, **extra: str) -> str:
        words = {"adj": draws.pick(ADJECTIVES), "animal": draws.pick(ANIMALS),
                 "object": draws.pick(OBJECTS), "place": draws.pick(PLACES)}
        verb, past = VERBS[min(int(draws.uniform() * len(VERBS)), len(VERBS) - 1)]
        past2 = VERBS[min(int(draws.uniform() * len(VERBS)), len(VERBS) - 1)][1]
        return template.format(**fixed, **words, verb=verb, past=past, past2=past2, **extra)

    sentences = [fill(draws.pick(OPENINGS))]
    for _ in range(2 + min(int(draws.uniform() * 4), 3)):  # 2–5 events
        sentences.append(fill(draws.pick(EVENTS), emotion=draws.pick(EMOTIONS)))
    sentences.append(fill(draws.pick(PROBLEMS)))
    resolved = draws.uniform() < RESOLVE_PROBABILITY
    sentences.append(fill(draws.pick(RESOLVED if resolved else UNRESOLVED)))
    ending = draws.pick(ENDINGS_GLAD if resolved else ENDINGS_UNHAPPY)
    sentences.append(fill(ending, emotion=draws.pick(GLAD if resolved else UNHAPPY)))
    return " ".join(sentences)
