"""One device→host copy for a whole pytree of tensors (docs/architecture.md "Performance shape").

    leaves → one dtype (float32 at least) → flattened, concatenated → .cpu()   (the one host sync)
           → split by each leaf's size → reshaped → .tolist() → the same tree of Python numbers

A 0-dim tensor comes back as a float, an n-dim one as nested lists; a leaf that is not a tensor
passes through. The tree's structure (torch's pytree spec) is the layout: no positions by hand.
"""

from functools import reduce
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten


def fetch(tree: Any) -> Any:
    """`tree` with every tensor leaf replaced by its values as Python numbers, in one copy."""
    leaves, spec = tree_flatten(tree)
    tensors = [leaf for leaf in leaves if isinstance(leaf, Tensor)]
    if not tensors:
        return tree
    dtype = reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)
    host = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors]).cpu()
    pieces = iter(host.split([t.numel() for t in tensors]))
    values = [next(pieces).reshape(leaf.shape).tolist() if isinstance(leaf, Tensor) else leaf for leaf in leaves]
    return tree_unflatten(values, spec)
