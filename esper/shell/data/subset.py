"""`--train-size N` / `--val-size N`: which samples of a split a run keeps (docs/runtime.md §5.2).

The first N of a fixed permutation of range(n) drawn from SeedSequence([data_seed, 3, split])
(split 0 train, 1 held-out), sorted back into source order; None keeps the whole split.
"""

import numpy as np
import torch
from torch import Tensor

from esper.shell.data.errors import DataError

_SUBSET_STREAM = 3  # SeedSequence([data_seed, 3, split]) draws the subset permutations


def subset_indices(n: int, wanted: int | None, data_seed: int, split: int, flag: str) -> Tensor | None:
    """Sorted indices of the first `wanted` of a fixed permutation of range(n); None keeps all."""
    if wanted is None:
        return None
    if not 1 <= wanted <= n:
        raise DataError(f"{flag} {wanted} is outside 1…{n}, the size of that split")
    word = np.random.SeedSequence([data_seed, _SUBSET_STREAM, split]).generate_state(1, np.uint64)[0]
    generator = torch.Generator().manual_seed(int(word))
    return torch.randperm(n, generator=generator)[:wanted].sort().values
