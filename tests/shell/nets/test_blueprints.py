"""Blueprint modules (docs/lifecycle.md §6.2, §6.3, §11 item 11): identity at birth, counts, init, causality."""

import pytest
import torch
from torch import nn

from esper.core.catalogue import catalogue_for
from esper.core.errors import UnknownBlueprintError
from esper.shell.nets import blueprints
from esper.shell.nets.blueprints import build_blueprint, groupnorm_groups

CNN_DIMS = (8, 16, 32, 64, 128)
CNN_SPATIAL = ((16, 16), (4, 4), (1, 1))
TRANSFORMER_DIMS = (64, 128)
SEQ_LEN = 12

# The spec tables, copied by hand: they pin the catalogue formulas and the modules alike.
CNN_TABLE = {
    "noop": (0, 0, 0, 0, 0),
    "norm": (17, 33, 65, 129, 257),
    "attention": (64, 128, 512, 2048, 8192),
    "depthwise": (152, 432, 1376, 4800, 17792),
    "bottleneck": (216, 280, 1104, 4384, 17472),
    "conv_light": (592, 2336, 9280, 36992, 147712),
    "conv_heavy": (1184, 4672, 18560, 73984, 295424),
}
TRANSFORMER_TABLE = {  # D = 64, 128, 384
    "noop": (0, 0, 0),
    "norm": (129, 257, 769),
    "lora": (1024, 2048, 6144),
    "attention": (16768, 66304, 592128),
    "mlp": (33216, 131968, 1182336),
}
# Blueprints with a randomly initialised tensor (every other tensor is 0 or a norm's 1/0).
RANDOM = {"cnn": {"attention", "depthwise", "bottleneck", "conv_heavy"},
          "transformer": {"lora", "attention", "mlp"}}

CNN_CASES = [pytest.param(n, c, hw, id=f"{n}-C{c}-{hw[0]}x{hw[1]}")
             for n in CNN_TABLE for c in CNN_DIMS for hw in CNN_SPATIAL]
TRANSFORMER_CASES = [(n, d) for n in TRANSFORMER_TABLE for d in TRANSFORMER_DIMS]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _perturb(module: nn.Module, seed: int) -> None:
    """Fill every parameter with noise, so the zero-initialised last layer no longer hides δ."""
    gen = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))


# ---------------------------------------------------------------- identity at birth, shape, counts


@pytest.mark.parametrize(("name", "c", "hw"), CNN_CASES)
def test_cnn_blueprint_is_zero_at_birth(name: str, c: int, hw: tuple[int, int]) -> None:
    module = build_blueprint("cnn", name, c, _gen())
    x = torch.randn(3, c, *hw, generator=_gen(1))
    delta = module(x)
    assert delta.shape == x.shape
    assert torch.equal(delta, torch.zeros_like(x))
    expected = CNN_TABLE[name][CNN_DIMS.index(c)]
    assert _n_params(module) == catalogue_for("cnn").spec(name).params(c) == expected


@pytest.mark.parametrize(("name", "d"), TRANSFORMER_CASES)
def test_transformer_blueprint_is_zero_at_birth(name: str, d: int) -> None:
    module = build_blueprint("transformer", name, d, _gen())
    x = torch.randn(3, SEQ_LEN, d, generator=_gen(1))
    delta = module(x)
    assert delta.shape == x.shape
    assert torch.equal(delta, torch.zeros_like(x))
    expected = TRANSFORMER_TABLE[name][TRANSFORMER_DIMS.index(d)]
    assert _n_params(module) == catalogue_for("transformer").spec(name).params(d) == expected


@pytest.mark.parametrize("name", list(TRANSFORMER_TABLE))
def test_transformer_table_at_384(name: str) -> None:
    assert catalogue_for("transformer").spec(name).params(384) == TRANSFORMER_TABLE[name][2]


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_norm_blueprints_are_exact_zero_on_large_input(topology: str) -> None:
    # tanh(0)·(N(x) − x) may be a signed zero: still == 0 and torch.equal to zeros.
    dim = 16 if topology == "cnn" else 64
    x = torch.randn((2, dim, 3, 3) if topology == "cnn" else (2, 5, dim), generator=_gen(2)) * 100
    assert torch.equal(build_blueprint(topology, "norm", dim, _gen())(x), torch.zeros_like(x))


def test_every_catalogue_entry_has_a_module_and_no_more() -> None:
    for topology, table in (("cnn", CNN_TABLE), ("transformer", TRANSFORMER_TABLE)):
        assert catalogue_for(topology).names == tuple(table)
        assert set(blueprints._BUILDERS[topology]) == set(table)


@pytest.mark.parametrize(("c", "g"), [(1, 1), (4, 1), (8, 1), (16, 1), (32, 2), (48, 2), (64, 4), (128, 8),
                                      (256, 16), (512, 32), (1024, 32), (96, 4)])
def test_groupnorm_groups_rule(c: int, g: int) -> None:
    assert groupnorm_groups(c) == g


def test_groupnorms_use_the_groups_rule() -> None:
    for c in CNN_DIMS:
        module = build_blueprint("cnn", "bottleneck", c, _gen())
        assert module.norm.num_groups == groupnorm_groups(max(4, c // 4))
        for name in ("norm", "depthwise", "conv_light", "conv_heavy"):
            built = build_blueprint("cnn", name, c, _gen())
            norms = [m for m in built.modules() if isinstance(m, nn.GroupNorm)]
            assert norms and all(m.num_groups == groupnorm_groups(c) for m in norms)


# ---------------------------------------------------------------- initialisation


ALL_AT_ONE_DIM = [("cnn", n, 32) for n in CNN_TABLE] + [("transformer", n, 64) for n in TRANSFORMER_TABLE]


@pytest.mark.parametrize(("topology", "name", "dim"), ALL_AT_ONE_DIM)
def test_same_generator_seed_same_module(topology: str, name: str, dim: int) -> None:
    a = build_blueprint(topology, name, dim, _gen(7)).state_dict()
    b = build_blueprint(topology, name, dim, _gen(7)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("topology", "name", "dim"),
                         [("cnn", n, 32) for n in sorted(RANDOM["cnn"])]
                         + [("transformer", n, 64) for n in sorted(RANDOM["transformer"])])
def test_different_generator_seed_different_module(topology: str, name: str, dim: int) -> None:
    a = build_blueprint(topology, name, dim, _gen(7)).state_dict()
    b = build_blueprint(topology, name, dim, _gen(8)).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_building_leaves_the_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    for name in CNN_TABLE:
        build_blueprint("cnn", name, 16, _gen())
    for name in TRANSFORMER_TABLE:
        build_blueprint("transformer", name, 64, _gen())
    assert torch.equal(before, torch.random.get_rng_state())


def test_random_layers_follow_pytorch_default_init() -> None:
    """Drawing from the generator gives exactly what PyTorch's reset_parameters would draw."""
    mlp = build_blueprint("transformer", "mlp", 64, _gen(5))
    dw = build_blueprint("cnn", "depthwise", 16, _gen(5))
    with torch.random.fork_rng():
        torch.manual_seed(5)
        ref_linear = nn.Linear(64, 256)
        torch.manual_seed(5)
        ref_dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
    assert torch.equal(mlp.fc_in.weight, ref_linear.weight) and torch.equal(mlp.fc_in.bias, ref_linear.bias)
    assert torch.equal(dw.dw.weight, ref_dw.weight)


def test_parameters_live_on_the_generator_device() -> None:
    module = build_blueprint("transformer", "attention", 64, _gen())
    assert all(p.device == torch.device("cpu") and not p.is_meta for p in module.parameters())


# ---------------------------------------------------------------- causality (I5) and purity


@pytest.mark.parametrize(("name", "d"), TRANSFORMER_CASES)
def test_transformer_blueprints_are_causal(name: str, d: int) -> None:
    module = build_blueprint("transformer", name, d, _gen())
    _perturb(module, seed=3)
    x = torch.randn(2, SEQ_LEN, d, generator=_gen(4))
    t = SEQ_LEN // 2
    later = x.clone()
    later[:, t + 1:] = torch.randn(2, SEQ_LEN - t - 1, d, generator=_gen(9)) * 10
    out, out_later = module(x), module(later)
    assert torch.equal(out[:, : t + 1], out_later[:, : t + 1])
    if name != "noop":  # the perturbation is real: later positions do change
        assert not torch.equal(out[:, t + 1:], out_later[:, t + 1:])


def test_attention_mixes_earlier_tokens() -> None:
    """The attention blueprint is not per-token: changing an early token moves later outputs."""
    module = build_blueprint("transformer", "attention", 64, _gen())
    _perturb(module, seed=3)
    x = torch.randn(1, SEQ_LEN, 64, generator=_gen(4))
    earlier = x.clone()
    earlier[:, 0] += 1.0
    assert not torch.equal(module(x)[:, -1], module(earlier)[:, -1])


@pytest.mark.parametrize(("topology", "name", "shape"),
                         [("cnn", n, (2, 16, 4, 4)) for n in CNN_TABLE]
                         + [("transformer", n, (2, SEQ_LEN, 64)) for n in TRANSFORMER_TABLE])
def test_functional_call_with_other_parameters(topology: str, name: str, shape: tuple[int, ...]) -> None:
    module = build_blueprint(topology, name, shape[1] if topology == "cnn" else shape[-1], _gen())
    params = {k: torch.randn(v.shape, generator=_gen(6)) * 0.1 for k, v in module.named_parameters()}
    x = torch.randn(shape, generator=_gen(1))
    out = torch.func.functional_call(module, params, (x,))
    _perturb(module, seed=0)
    with torch.no_grad():
        for k, p in module.named_parameters():
            p.copy_(params[k])
    assert torch.equal(out, module(x))


# ---------------------------------------------------------------- lookup errors


def test_unknown_name_raises() -> None:
    with pytest.raises(UnknownBlueprintError):
        build_blueprint("cnn", "resnet", 16, _gen())


@pytest.mark.parametrize(("topology", "name", "dim"), [("cnn", "lora", 16), ("cnn", "mlp", 16),
                                                      ("transformer", "depthwise", 64),
                                                      ("transformer", "conv_light", 64)])
def test_cross_topology_name_raises(topology: str, name: str, dim: int) -> None:
    with pytest.raises(UnknownBlueprintError):
        build_blueprint(topology, name, dim, _gen())


@pytest.mark.parametrize(("topology", "name", "dim"), [("transformer", "attention", 66), ("cnn", "norm", 0)])
def test_dim_the_constraint_rejects_raises(topology: str, name: str, dim: int) -> None:
    with pytest.raises(ValueError):
        build_blueprint(topology, name, dim, _gen())


@pytest.mark.parametrize("name", ["norm", "depthwise", "bottleneck", "conv_light", "conv_heavy"])
def test_a_detached_channels_last_input_trains_like_a_contiguous_one(name):
    """Regression: torch's CPU GroupNorm backward segfaulted on a channels-last input without grad
    (a seed's detached host activation; found on fashion-mnist's 32×3×3 late slot)."""
    module = build_blueprint("cnn", name, 32, torch.Generator().manual_seed(0))
    for p in module.parameters():  # leave birth so every parameter gets a gradient
        nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(1))
    x = torch.randn(128, 32, 3, 3, generator=torch.Generator().manual_seed(2))
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        module.zero_grad()
        module(x.to(memory_format=layout)).square().sum().backward()
        grads.append([p.grad.clone() for p in module.parameters()])
    for contiguous, channels_last in zip(*grads, strict=True):
        torch.testing.assert_close(channels_last, contiguous)
