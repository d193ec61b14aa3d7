"""Fixtures of the end-to-end tests."""

import contextlib
from collections.abc import Iterator

import pytest
import torch


@contextlib.contextmanager
def held_torch_threads(threads: int) -> Iterator[int]:
    """torch's intra-op thread count set to `threads` inside the block; the count and torch's global RNG
    state are put back on the way out (an exception included), so nothing after inherits them."""
    before, rng = torch.get_num_threads(), torch.get_rng_state()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
        torch.set_rng_state(rng)


@pytest.fixture
def torch_threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """`held_torch_threads` for one test: 2 by default, as on CI's 2-core machine (parametrize with
    `indirect=True` for others), since a run's float reduction order, and so its path, depends on it."""
    with held_torch_threads(getattr(request, "param", 2)) as threads:
        yield threads
