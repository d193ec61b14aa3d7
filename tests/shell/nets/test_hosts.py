"""Hosts (docs/lifecycle.md §7): parameter counts, slot layouts, segment contract, both transformer backends."""

import json

import attrs
import pytest
import torch
from torch.func import functional_call

from esper.core import codec
from esper.core.errors import HostConfigError
from esper.shell.nets.hosts import (
    HOST_PRESETS,
    CNNHostConfig,
    Host,
    HostConfig,
    TransformerHostConfig,
    build_host,
    host_config,
    host_for,
)
from esper.shell.nets.transformer_host import default_slots

CNN_PRESETS = ("cifar10", "cifar10-deep", "fashion-mnist")
TRANSFORMER_CASES = [("tiny", "hf"), ("tiny", "native"), ("synth-stories", "hf"), ("synth-stories", "native")]
SPEC_PARAMS = {
    "cifar10": 6_418, "cifar10-deep": 99_922, "fashion-mnist": 6_274,
    "synth-stories": 644_224, "tiny": 170_560,
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def n_params(host: torch.nn.Module) -> int:
    return sum(p.numel() for p in host.parameters())


def sample_input(host: Host, batch: int = 2, length: int | None = None) -> torch.Tensor:
    cfg = host.config
    if isinstance(cfg, CNNHostConfig):
        return torch.randn(batch, *cfg.input_shape, generator=gen(7))
    return torch.randint(0, cfg.vocab_size, (batch, length or cfg.block_size), generator=gen(7))


def chain(host: Host, x: torch.Tensor) -> torch.Tensor:
    for k in range(host.n_slots + 1):
        x = host.segment(k, x)
    return x


def all_hosts() -> list[tuple[str, dict]]:
    cases: list[tuple[str, dict]] = [(name, {}) for name in CNN_PRESETS]
    return cases + [(name, {"backend": backend}) for name, backend in TRANSFORMER_CASES]


# --- parameter counts and slot tables --------------------------------------------------------------


@pytest.mark.parametrize(("preset", "overrides"), all_hosts())
def test_parameter_count_equals_formula_and_spec(preset: str, overrides: dict) -> None:
    host = host_for(preset, gen(), **overrides)
    assert n_params(host) == host.config.param_count() == SPEC_PARAMS[preset]


def test_tinystories_formula_at_both_vocabularies() -> None:
    gpt2 = host_config("tinystories")
    assert gpt2.param_count() == 30_044_544
    assert gpt2.vocab_size * gpt2.d_model == 19_298_688  # the tied embedding
    bpe = host_config("tinystories", vocab_size=8_192)
    assert bpe.param_count() == 13_891_584
    assert n_params(build_host(bpe, gen())) == 13_891_584


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("cifar10", [("early", 0, 8, (8, 16, 16)), ("mid", 1, 16, (16, 8, 8)), ("late", 2, 32, (32, 4, 4))]),
        ("cifar10-deep",
         [("early", 0, 8, (8, 16, 16)), ("mid", 1, 16, (16, 8, 8)), ("late", 2, 32, (32, 4, 4))]),
        ("fashion-mnist",
         [("early", 0, 8, (8, 14, 14)), ("mid", 1, 16, (16, 7, 7)), ("late", 2, 32, (32, 3, 3))]),
        ("tinystories",
         [("early", 1, 384, (256, 384)), ("mid", 3, 384, (256, 384)), ("late", 5, 384, (256, 384))]),
        ("synth-stories",
         [("early", 0, 128, (128, 128)), ("mid", 1, 128, (128, 128)), ("late", 2, 128, (128, 128))]),
        ("tiny", [("early", 0, 64, (64, 64)), ("mid", 1, 64, (64, 64)), ("late", 2, 64, (64, 64))]),
    ],
)
def test_preset_slot_specs(preset: str, expected: list) -> None:
    specs = host_config(preset).slot_specs()
    assert [(s.name, s.position, s.dim, s.feature_shape) for s in specs] == expected
    assert [s.index for s in specs] == [0, 1, 2]


def test_deep_cnn_custom_layout_reaches_blocks_3_and_4() -> None:
    host = host_for("cifar10-deep", gen(), slots=[("b3", 3), ("b4", 4)])
    assert [(s.name, s.index, s.dim, s.feature_shape) for s in host.slot_specs] == [
        ("b3", 0, 64, (64, 2, 2)), ("b4", 1, 128, (128, 1, 1))]


def test_changing_the_depth_keeps_a_pool_after_every_block() -> None:
    assert host_config("cifar10", n_blocks=4).pool_layers == 4
    assert host_config("cifar10", n_blocks=4, pool_layers=2).pool_layers == 2


def test_synth_images_uses_the_cifar10_host() -> None:
    assert host_config("synth-images") == HOST_PRESETS["cifar10"]


def test_default_transformer_layout() -> None:
    assert default_slots(6) == (("early", 1), ("mid", 3), ("late", 5))
    assert default_slots(3) == (("early", 0), ("mid", 1), ("late", 2))
    with pytest.raises(HostConfigError):
        default_slots(2)


# --- the segment contract -----------------------------------------------------------------------------

LAYOUTS = {"none": [], "one": [("only", 1)], "all": [0, 1, 2], "last": {"late": 2}}


@pytest.mark.parametrize(("preset", "overrides"), all_hosts())
@pytest.mark.parametrize("layout", [None, *LAYOUTS])
def test_segment_chain_equals_forward_exactly(preset: str, overrides: dict, layout: str | None) -> None:
    if layout is not None:
        overrides = {**overrides, "slots": LAYOUTS[layout]}
    host = host_for(preset, gen(), **overrides).eval()
    x = sample_input(host, length=16)
    with torch.no_grad():
        assert torch.equal(chain(host, x), host(x))


@pytest.mark.parametrize(("preset", "overrides"), all_hosts())
def test_segment_outputs_have_the_slot_shapes(preset: str, overrides: dict) -> None:
    host = host_for(preset, gen(), **overrides).eval()
    cfg, x = host.config, sample_input(host, length=10)
    h = x
    with torch.no_grad():
        for k, spec in enumerate(host.slot_specs):
            h = host.segment(k, h)
            expected = spec.feature_shape if isinstance(cfg, CNNHostConfig) else (10, spec.dim)
            assert h.shape == (2, *expected)
        out = host.segment(host.n_slots, h)
    n_out = cfg.n_classes if isinstance(cfg, CNNHostConfig) else cfg.vocab_size
    assert out.shape[0] == 2 and out.shape[-1] == n_out


def test_segment_index_out_of_range() -> None:
    host = host_for("tiny", gen())
    with pytest.raises(IndexError):
        host.segment(4, torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize(("preset", "overrides"), all_hosts())
def test_forward_is_a_function_of_parameters(preset: str, overrides: dict) -> None:
    host = host_for(preset, gen(), **overrides).eval()
    other = host_for(preset, gen(5), **overrides).eval()
    x = sample_input(host, length=8)
    state = {**dict(other.named_parameters()), **dict(other.named_buffers())}
    with torch.no_grad():
        assert torch.equal(functional_call(host, state, (x,)), other(x))


# --- the transformer host -------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["tiny", "synth-stories"])
def test_backends_share_parameters_and_outputs(preset: str) -> None:
    hf = host_for(preset, gen(3), backend="hf").eval()
    native = host_for(preset, gen(3), backend="native").eval()
    a, b = hf.state_dict(), native.state_dict()
    assert [(k, v.shape) for k, v in a.items()] == [(k, v.shape) for k, v in b.items()]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same generator → same weights
    x = sample_input(hf, length=32)
    with torch.no_grad():
        torch.testing.assert_close(hf(x), native(x), rtol=1e-5, atol=1e-5)
        # weights copied across (a trained hf host into a native one) give the same function too
        other = host_for(preset, gen(4), backend="hf").eval()
        native.load_state_dict(other.state_dict(), strict=True)
        torch.testing.assert_close(other(x), native(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["hf", "native"])
def test_transformer_is_causal(backend: str) -> None:
    host = host_for("tiny", gen(), backend=backend).eval()
    x = sample_input(host, batch=1, length=20)
    y = x.clone()
    y[:, 11:] = (y[:, 11:] + 17) % 256
    with torch.no_grad():
        out_x, out_y = host(x), host(y)
    assert torch.equal(out_x[:, :11], out_y[:, :11])
    assert not torch.equal(out_x[:, 11:], out_y[:, 11:])


@pytest.mark.parametrize("backend", ["hf", "native"])
def test_too_long_sequence_raises(backend: str) -> None:
    host = host_for("tiny", gen(), backend=backend)
    with pytest.raises(ValueError, match="block size"):
        host(torch.zeros(1, 65, dtype=torch.long))
    assert host(torch.zeros(1, 64, dtype=torch.long)).shape == (1, 64, 256)


def test_transformer_init_scheme() -> None:
    host = host_for("synth-stories", gen(), backend="native")
    n = host.config.n_layers
    for name, p in host.named_parameters():
        if ".ln_" in name or name.startswith("ln_f"):
            assert torch.equal(p, torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
        elif name.endswith("bias"):
            assert not p.any(), name
    c_proj = torch.cat([host.blocks[i].mlp.c_proj.weight.flatten() for i in range(n)])
    assert abs(c_proj.std().item() - 0.02 / (2 * n) ** 0.5) < 1e-3
    assert abs(host.wte.weight.std().item() - 0.02) < 1e-3


def test_transformer_dropout_only_in_training() -> None:
    host = host_for("tiny", gen(), dropout=0.5, backend="native")
    x = sample_input(host, length=8)
    with torch.no_grad():
        host.train()
        assert not torch.equal(host(x), host(x))
        host.eval()
        assert torch.equal(host(x), host(x))


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "slots",
    [
        [("early", 0), ("early", 1)],  # duplicate name
        [("Early", 0)], [("1st", 0)], [("a-b", 0)], [("", 0)], [(3, 0)],  # name pattern
        [("a", 1), ("b", 1)], [("a", 2), ("b", 1)],  # not strictly increasing
        [("a", -1)], [("a", 3)], [("a", 1.0)], [("a", True)],  # out of range / not an int
        [("a",)], "early",  # not pairs
    ],
)
@pytest.mark.parametrize("preset", ["cifar10", "tiny"])
def test_invalid_layouts_raise(preset: str, slots: object) -> None:
    with pytest.raises(HostConfigError):
        host_for(preset, gen(), slots=slots)


def test_zero_slots_is_the_static_baseline() -> None:
    host = host_for("cifar10", gen(), slots=()).eval()
    x = sample_input(host)
    assert host.n_slots == 0 and host.slot_specs == ()
    with torch.no_grad():
        assert torch.equal(host.segment(0, x), host(x))


@pytest.mark.parametrize(
    "overrides",
    [{"width": 0}, {"pool_layers": 4}, {"input_shape": (3, 32)}, {"input_shape": (3, 4, 4), "pool_layers": 3},
     {"n_classes": True}],
)
def test_invalid_cnn_configs_raise(overrides: dict) -> None:
    with pytest.raises(HostConfigError):
        host_config("cifar10", **overrides)


@pytest.mark.parametrize(
    "overrides",
    [{"n_heads": 5}, {"dropout": 1.0}, {"dropout": "x"}, {"backend": "jax"}, {"vocab_size": 0},
     {"n_layers": 2}],
)
def test_invalid_transformer_configs_raise(overrides: dict) -> None:
    with pytest.raises(HostConfigError):
        host_config("tiny", **overrides)


def test_unknown_preset_and_field() -> None:
    with pytest.raises(HostConfigError, match=r"cifar10.*tiny"):
        host_for("imagenet", gen())
    with pytest.raises(HostConfigError, match="no field"):
        host_config("tiny", colour="red")
    with pytest.raises(HostConfigError):
        build_host({"kind": "cnn"}, gen())  # type: ignore[arg-type]


# --- configs and determinism ------------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "overrides"), [*all_hosts(), ("cifar10-deep", {"slots": {"b3": 3}})])
def test_config_round_trip_rebuilds_the_same_host(preset: str, overrides: dict) -> None:
    config = host_config(preset, **overrides)
    data = json.loads(json.dumps(codec.encode(config)))
    restored = codec.decode(HostConfig, data)
    assert restored == config and codec.decode(type(restored), data) == config
    a, b = build_host(config, gen(11)), build_host(restored, gen(11))
    sa, sb = a.state_dict(), b.state_dict()
    assert [(k, v.shape) for k, v in sa.items()] == [(k, v.shape) for k, v in sb.items()]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.slot_specs == b.slot_specs


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "rnn"},
        {"kind": "cnn"},
        {"kind": "transformer", **codec.encode(host_config("tiny")), "extra": 1},
        {**codec.encode(host_config("cifar10")), "width": "eight"},
        {**codec.encode(host_config("tiny")), "dropout": "x"},
    ],
)
def test_bad_config_records_raise(data: dict) -> None:
    with pytest.raises(HostConfigError):
        codec.decode(HostConfig, data)


@pytest.mark.parametrize(("preset", "overrides"), all_hosts())
def test_init_is_deterministic_and_leaves_global_rng_alone(preset: str, overrides: dict) -> None:
    before = torch.get_rng_state()
    a = host_for(preset, gen(2), **overrides).state_dict()
    b = host_for(preset, gen(2), **overrides).state_dict()
    c = host_for(preset, gen(3), **overrides).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert all(torch.isfinite(v).all() for v in a.values() if v.is_floating_point())


def test_batchnorm_starts_fresh() -> None:
    host = host_for("cifar10", gen())
    bn = host.blocks[0].bn
    assert torch.equal(bn.running_mean, torch.zeros(8)) and torch.equal(bn.running_var, torch.ones(8))
    assert int(bn.num_batches_tracked) == 0
    assert torch.equal(bn.weight, torch.ones(8)) and not bn.bias.any()


def test_configs_are_frozen_values() -> None:
    config = host_config("tiny")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.d_model = 8  # type: ignore[misc]
    assert isinstance(config, TransformerHostConfig)
    assert hash(config) == hash(host_config("tiny"))
