"""gae's bootstrap in every form a caller may pass (docs/rl.md §5): a Python float on a trajectory longer than one
step, and a tensor of another dtype than the values; the advantages and returns keep the values' dtype."""

import pytest
import torch

from esper.core.gae import gae

# r = 1, 2, 3; d = ½ everywhere; v = 1; bootstrap 10; λ = 1:
# δ = (1 + ½ − 1, 2 + ½ − 1, 3 + ½·10 − 1) = (0.5, 1.5, 7) → A = (0.5 + ½·5, 1.5 + ½·7, 7) = (3, 5, 7), G = A + 1.
ADVANTAGES, RETURNS = [3.0, 5.0, 7.0], [4.0, 6.0, 8.0]


def _trajectory(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.tensor([1.0, 2.0, 3.0], dtype=dtype), torch.full((3,), 0.5, dtype=dtype),
            torch.ones(3, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bootstrap", [10.0, torch.tensor(10.0, dtype=torch.float64), torch.tensor([10.0])],
                         ids=["python-float", "float64-0d", "float32-1d"])
def test_every_bootstrap_form_gives_the_hand_values_in_the_values_dtype(
        dtype: torch.dtype, bootstrap: float | torch.Tensor) -> None:
    adv, ret = gae(*_trajectory(dtype), bootstrap, 1.0)
    assert (adv.dtype, ret.dtype) == (dtype, dtype)
    assert (adv.tolist(), ret.tolist()) == (ADVANTAGES, RETURNS)
