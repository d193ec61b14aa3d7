"""Stack hosts (docs/lifecycle.md §7.4): any stack of blocks with named slots, shapes from one probe forward."""

import pytest
import torch
from torch import nn

from esper.core.errors import HostConfigError
from esper.shell.model import MorphogeneticModel
from esper.shell.nets.stack_host import StackHost, StackHostConfig, host_from_stack


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Linear(32, 5))


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))


def _cnn_parts() -> tuple[nn.Module, list[nn.Module], nn.Module]:
    torch.manual_seed(1)
    stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    blocks = [Residual(8), nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU()), Residual(16)]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 10))
    return stem, blocks, head


def _chain(host: StackHost, x: torch.Tensor) -> torch.Tensor:
    for k in range(host.n_slots + 1):
        x = host.segment(k, x)
    return x


def test_a_sequential_mlp_is_a_host_whose_segments_chain_to_the_stack_bit_for_bit():
    seq, x = _mlp(), torch.randn(6, 12)
    host = host_from_stack(seq, {"early": 1, "late": 4}, sample=x)
    assert isinstance(host.config, StackHostConfig) and host.config.KIND == "mlp"
    assert [(s.name, s.index, s.position, s.dim, s.feature_shape) for s in host.slot_specs] == [
        ("early", 0, 1, 32, (32,)), ("late", 1, 4, 32, (32,))]
    host.eval(), seq.eval()
    assert torch.equal(host(x), seq(x)) and torch.equal(_chain(host, x), seq(x))
    host.train(), seq.train()
    assert torch.equal(host(x), seq(x))
    assert host.segment(0, x).shape == (6, 32)
    assert list(host.parameters()) == list(seq.parameters())  # the user's modules, not copies


def test_a_block_list_with_stem_and_head_gets_conv_slots():
    stem, blocks, head = _cnn_parts()
    x = torch.randn(3, 1, 14, 14)
    host = host_from_stack(blocks, [("early", 0), ("late", 2)], sample=x, stem=stem, head=head)
    assert host.config.KIND == "cnn"
    assert [(s.dim, s.feature_shape) for s in host.slot_specs] == [(8, (8, 14, 14)), (16, (16, 7, 7))]
    host.eval()
    expected = head(blocks[2](blocks[1](blocks[0](stem(x)))))
    assert torch.equal(host(x), expected)
    model = MorphogeneticModel(host, run_seed=0)  # every cnn blueprint probes at the slots' real shapes
    assert model.topology == "cnn" and all(all(row) for row in model.validation.entries)


def test_token_features_get_the_transformer_catalogue():
    torch.manual_seed(2)
    blocks = [nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 16)) for _ in range(3)]
    tokens = torch.randint(0, 50, (2, 9))
    host = host_from_stack(blocks, {"mid": 1}, sample=tokens, stem=nn.Embedding(50, 16), head=nn.Linear(16, 50))
    assert host.config.KIND == "transformer"
    assert [(s.dim, s.feature_shape) for s in host.slot_specs] == [(16, (9, 16))]
    assert MorphogeneticModel(host, run_seed=0).catalogue.topology == "transformer"


def test_the_probe_forward_changes_nothing():
    seq, x = _mlp(), torch.randn(6, 12)
    seq.train()
    seq[0].eval()  # a mixed mode is kept module by module
    stats = seq[3].running_mean.clone()
    rng = torch.get_rng_state()
    host = host_from_stack(seq, {"early": 1}, sample=x)
    assert torch.equal(seq[3].running_mean, stats) and seq[3].num_batches_tracked.item() == 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert host.blocks[1].training and not host.blocks[0].training


@pytest.mark.parametrize(("slots", "match"), [
    ({"early": 6}, "outside"),
    ({"a": 2, "b": 1}, "increasing"),
    ({"Bad": 1}, "does not match"),
    ({}, "at least one slot"),
])
def test_bad_layouts_raise(slots, match):
    with pytest.raises(HostConfigError, match=match):
        host_from_stack(_mlp(), slots, sample=torch.randn(2, 12))


def test_slots_on_mixed_features_raise_naming_them():
    stem, blocks, _ = _cnn_parts()
    flat = [*blocks, nn.Flatten(1), nn.Linear(16 * 49, 16)]
    with pytest.raises(HostConfigError, match="one kind of feature"):
        host_from_stack(flat, {"conv": 0, "flat": 4}, sample=torch.randn(2, 1, 14, 14), stem=stem)
    with pytest.raises(HostConfigError, match=r"got odd \(-1, 3, 2, 2, 2\)"):
        host_from_stack([nn.Unflatten(1, (3, 2, 2, 2))], {"odd": 0}, sample=torch.randn(2, 24))


def test_empty_blocks_raise():
    with pytest.raises(HostConfigError, match="non-empty"):
        host_from_stack([], {"a": 0}, sample=torch.randn(2, 3))
