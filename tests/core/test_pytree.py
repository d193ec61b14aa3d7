"""Core states with tensor fields are pytrees: torch.func transforms map over them."""

import attrs
import pytest
import torch
import torch.utils._pytree as torch_pytree
from torch import Tensor

from esper.core.pytree import register_pytree, static_field, tree_index, tree_stack


@register_pytree
@attrs.frozen
class Running:
    mean: Tensor
    count: Tensor
    clip: float = static_field(default=5.0)


def _state() -> Running:
    return Running(torch.tensor([1.0, 2.0]), torch.tensor(3.0), clip=2.5)


def test_flatten_round_trip_keeps_static_fields_out_of_the_leaves():
    leaves, spec = torch_pytree.tree_flatten(_state())
    assert len(leaves) == 2 and all(isinstance(x, Tensor) for x in leaves)
    rebuilt = torch_pytree.tree_unflatten([x * 2 for x in leaves], spec)
    assert isinstance(rebuilt, Running) and rebuilt.clip == 2.5
    assert torch.equal(rebuilt.mean, torch.tensor([2.0, 4.0]))


def test_tree_map_and_vmap_walk_the_state():
    batch = Running(torch.arange(6.0).reshape(3, 2), torch.tensor([1.0, 2.0, 3.0]))
    scaled = torch.func.vmap(lambda s: Running(s.mean / s.count, s.count, s.clip))(batch)
    assert isinstance(scaled, Running)
    assert torch.equal(scaled.mean, batch.mean / batch.count[:, None])


def test_grad_through_a_state():
    def loss(s: Running) -> Tensor:
        return (s.mean**2).sum() * s.count

    grads = torch.func.grad(loss)(_state())
    assert torch.equal(grads.mean, 2 * _state().mean * 3.0)
    assert grads.count.item() == pytest.approx(5.0)


def test_jax_walks_the_same_state():
    jax = pytest.importorskip("jax")  # installed in CI through the `jax` extra
    leaves = jax.tree_util.tree_leaves(_state())
    assert len(leaves) == 2


def test_tree_stack_adds_a_leading_axis_to_every_leaf_and_keeps_static_fields():
    other = Running(torch.tensor([5.0, 6.0]), torch.tensor(7.0), clip=2.5)
    stacked = tree_stack([_state(), other])
    assert isinstance(stacked, Running) and stacked.clip == 2.5
    assert torch.equal(stacked.mean, torch.tensor([[1.0, 2.0], [5.0, 6.0]]))
    assert torch.equal(stacked.count, torch.tensor([3.0, 7.0]))
    with pytest.raises(ValueError):
        tree_stack([])
    with pytest.raises(ValueError):  # a different static field is a different structure
        tree_stack([_state(), Running(other.mean, other.count, clip=1.0)])


def test_tree_index_picks_rows_of_every_leaf_and_inverts_tree_stack():
    states = [Running(torch.tensor([float(i), -float(i)]), torch.tensor(float(i))) for i in range(4)]
    stacked = tree_stack(states)
    one = tree_index(stacked, 2)
    assert isinstance(one, Running)
    assert torch.equal(one.mean, states[2].mean) and torch.equal(one.count, states[2].count)
    picked = tree_index((stacked, stacked.count), torch.tensor([3, 0]))
    assert torch.equal(picked[0].mean, torch.stack([states[3].mean, states[0].mean]))
    assert torch.equal(picked[1], torch.tensor([3.0, 0.0]))


def test_tree_stack_and_index_take_jax_leaves():
    jnp = pytest.importorskip("jax.numpy")  # installed in CI through the `jax` extra
    stacked = tree_stack([Running(jnp.ones(2), jnp.asarray(1.0)), Running(jnp.zeros(2), jnp.asarray(2.0))])
    assert stacked.mean.shape == (2, 2) and float(tree_index(stacked, 1).count) == 2.0
