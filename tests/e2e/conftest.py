"""Fixtures of the end-to-end tests."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def torch_threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """torch's intra-op thread count for one test (default 2, as on CI's 2-core machine; parametrize with
    `indirect=True` for others): a run's float reduction order depends on it. The thread count and torch's
    global RNG state are put back afterwards, so no later test in the session inherits them."""
    threads = getattr(request, "param", 2)
    before, rng = torch.get_num_threads(), torch.get_rng_state()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
        torch.set_rng_state(rng)
