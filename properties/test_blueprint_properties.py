"""The blueprint contract (docs/lifecycle.md §5, §6), for every built-in blueprint of the three catalogues
and for a user blueprint registered through `blueprint_check.register`:

    identity at birth   δ(x) = 0 exactly and has x's shape, for any x (large values included)
    parameter formula   Σ_θ numel(θ) = params(dim) at every dim the blueprint fits
    isolation           a TRAINING or BLENDING slot: y = h exactly at α = 0, and ∂L/∂h = g exactly
                        (the seed reads h.detach(), so the host's gradient is the identity path's g)

Each catalogue is drawn with a dim it fits and a feature shape: cnn (N, C, H, W), transformer (N, T, D),
mlp (N, D). The user catalogues are the built-in ones extended with a gated low-rank blueprint.
"""

import functools

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from esper.core.blend import knobs_for
from esper.core.catalogue import Catalogue, catalogue_for
from esper.core.seed import SlotSpec
from esper.core.stages import Stage
from esper.shell.blueprint_check import register
from esper.shell.model import SeedSlot, build_module, seed_generator
from esper.shell.nets.hosts import host_for
from esper.shell.nets.stack_host import host_from_stack

DIMS = {"cnn": (4, 8, 16), "transformer": (8, 16, 32), "mlp": (4, 8, 16, 32)}
USER = "gated_rank2"


class GatedRank2(nn.Module):
    """A user blueprint: δ(x) = tanh(g)·U·V·x over the feature axis (channels of a map, else the last axis)."""

    def __init__(self, dim: int, axis: int) -> None:
        super().__init__()
        self.axis = axis
        self.down, self.up = nn.Linear(dim, 2, bias=False), nn.Linear(2, dim, bias=False)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.movedim(self.axis, -1)
        return (torch.tanh(self.gate) * self.up(self.down(h))).movedim(-1, self.axis)


def _probe(topology: str) -> tuple[nn.Module, torch.Tensor]:
    """A small host of the topology to register the user blueprint on."""
    torch.manual_seed(0)
    if topology == "cnn":
        return host_for("fashion-mnist", torch.Generator().manual_seed(0)), torch.randn(2, 1, 28, 28)
    if topology == "mlp":
        seq = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        x = torch.randn(4, 6)
        return host_from_stack(seq, {"a": 1, "b": 3}, sample=x), x
    return host_for("tiny", torch.Generator().manual_seed(0)), torch.randint(0, 256, (2, 8))


@functools.cache
def catalogue(topology: str, user: bool) -> Catalogue:
    base = catalogue_for(topology)
    if not user:
        return base
    host, sample = _probe(topology)
    axis = 1 if topology == "cnn" else -1
    return register(base, USER, lambda d: GatedRank2(d, axis), lambda d: 2 * 2 * d + 1,
                    host=host, sample=sample)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Catalogue, str, torch.Tensor]:
    """(catalogue, a germinable blueprint, a feature batch x at a dim it fits)."""
    topology = draw(st.sampled_from(sorted(DIMS)))
    user = draw(st.booleans())
    cat = catalogue(topology, user)
    # With a user catalogue, half the draws take the user's blueprint (the last entry).
    spec = draw(st.sampled_from(cat.germinable[-1:] if user and draw(st.booleans()) else cat.germinable))
    dim = draw(st.sampled_from([d for d in DIMS[topology] if spec.fits(d)]))
    n = draw(st.integers(1, 3))
    inner = {"cnn": (dim, draw(st.integers(1, 5)), draw(st.integers(1, 5))),
             "transformer": (draw(st.integers(1, 6)), dim), "mlp": (dim,)}[topology]
    scale = draw(st.sampled_from([1.0, 1e3]))
    x = scale * torch.randn(n, *inner, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    return cat, spec.name, x


def _dim(cat: Catalogue, x: torch.Tensor) -> int:
    return x.shape[1] if cat.topology == "cnn" else x.shape[-1]


def _build(cat: Catalogue, name: str, x: torch.Tensor, seed: int = 0) -> nn.Module:
    return build_module(cat, name, _dim(cat, x), seed_generator(seed, 0, 0, 0, 0))


@given(cases())
def test_every_blueprint_is_the_identity_at_birth(case):
    cat, name, x = case
    delta = _build(cat, name, x)(x)
    assert delta.shape == x.shape
    assert torch.equal(delta, torch.zeros_like(x))


@given(cases())
def test_every_blueprint_has_the_parameters_of_its_formula(case):
    cat, name, x = case
    module = _build(cat, name, x)
    assert sum(p.numel() for p in module.parameters()) == cat.spec(name).params(_dim(cat, x))


@given(cases(), st.sampled_from([Stage.TRAINING, Stage.BLENDING]), st.floats(0.0, 1.0, width=32))
def test_a_live_seed_leaves_the_host_gradient_untouched(case, stage, alpha):
    cat, name, x = case
    alpha = 0.0 if stage == Stage.TRAINING else alpha
    slot = SeedSlot(SlotSpec("s", 0, 0, _dim(cat, x), x.shape[1:]), torch.float32, torch.device("cpu"))
    module = _build(cat, name, x)
    with torch.no_grad():  # a seed that has learned: δ ≠ 0, so only the detach isolates the host
        for p in module.parameters():
            p.add_(0.1)
    slot.install(module, "s-seed", name)
    slot.knobs, slot.stage = knobs_for(stage), stage
    slot.alpha.fill_(alpha)
    h = x.clone().requires_grad_(True)
    y = slot(h)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(5))
    (y * g).sum().backward()
    assert torch.equal(h.grad, g)
    if alpha == 0.0:
        assert torch.equal(y, x)
