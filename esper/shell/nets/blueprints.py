"""Seed modules, one per catalogue blueprint (docs/lifecycle.md §6.2 and §6.3).

Every module computes the seed's *delta* δ only; the identity lives in `esper.core.blend`,
so the seed's function is s(h) = h + δ(h). The last layer named in the spec tables starts at
zero (scalar gates a = 0), hence δ ≡ 0 and the seed is the identity at birth.

Construction never touches the global RNG: layers are declared on the meta device, then
materialised on the generator's device and initialised from the passed `torch.Generator` with
PyTorch's default scheme for each layer type (the caller owns placement through the generator).
Forwards read only the module's own parameters, so `torch.func.functional_call` works.

`build_blueprint` is the entry point for built-in blueprints: the name is looked up in the
topology's catalogue (an unknown name raises `UnknownBlueprintError`, never a silent noop) and the
built module's parameter count is checked against the catalogue formula. The `mlp` topology (flat
features (N, D) of a stack host) reuses the transformer's per-token modules, which act on the last
axis. `build_extension` builds a user blueprint (`Catalogue.with_blueprint`) from its own builder,
under a CPU RNG forked and seeded from the generator, so the seed init stays a function of the
generator and the global RNG is left as it was.
"""

import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper.core.catalogue import BlueprintSpec, Catalogue, catalogue_for, reduced_width
from esper.core.errors import HostCatalogueMismatch
from esper.shell.nets.host_base import default_init_

_META = torch.device("meta")  # declare shapes only; nothing is drawn until `_materialise`
_LORA_RANK = 8
_ATTENTION_HEADS = 4


def groupnorm_groups(c: int) -> int:
    """g(C) of §6.1: the largest g in {32, 16, 8, 4, 2, 1} dividing C with C / g ≥ min(16, C)."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if c % g == 0 and c // g >= min(16, c))


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm that hands the kernel a contiguous input.

    torch's CPU backward for a channels-last input that does not require grad (a seed's detached
    host activation, e.g. a 32×3×3 map the host left channels-last) writes to an undefined dX and
    segfaults. Contiguous input takes the standard kernel; the copy is a no-op when already contiguous.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.contiguous())


def _gn(c: int) -> nn.GroupNorm:
    return GroupNorm(groupnorm_groups(c), c, device=_META)


def _conv(c_in: int, c_out: int, kernel: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False, device=_META)


def _linear(d_in: int, d_out: int, bias: bool) -> nn.Linear:
    return nn.Linear(d_in, d_out, bias=bias, device=_META)


def _gate() -> nn.Parameter:
    return nn.Parameter(torch.empty((), device=_META))


class Delta(nn.Module):
    """Base of every seed module: forward(x) returns δ(x), same shape as x."""

    zero_init: str | None = None  # attribute (layer or parameter) that starts at zero


# ---------------------------------------------------------------- shared by both topologies


class Noop(Delta):
    """δ = 0 exactly (zeros, not x·0: a NaN in x must not leak into the identity baseline)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


# ---------------------------------------------------------------- CNN, x: (B, C, H, W)


class GroupNormDelta(Delta):
    """norm: tanh(a)·(GN(x) − x); a = 0 at birth."""

    zero_init = "a"

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm, self.a = _gn(c), _gate()

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.a) * (self.norm(x) - x)


class SqueezeExcite(Delta):
    """attention: x ⊙ tanh(W₂·relu(W₁·avgpool(x))); tanh(0) = 0 so the residual SE starts at 0."""

    zero_init = "excite"

    def __init__(self, c: int) -> None:
        super().__init__()
        r = reduced_width(c)
        self.squeeze, self.excite = _linear(c, r, bias=False), _linear(r, c, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(-2, -1))
        gate = torch.tanh(self.excite(F.relu(self.squeeze(pooled))))
        return x * gate[..., None, None]


class Depthwise(Delta):
    """depthwise: pw₁ₓ₁(relu(GN(dw₃ₓ₃(x)))), dw with groups = C."""

    zero_init = "pw"

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw, self.norm, self.pw = _conv(c, c, 3, groups=c), _gn(c), _conv(c, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(F.relu(self.norm(self.dw(x))))


class Bottleneck(Delta):
    """bottleneck: up₁ₓ₁(relu(GN_b(conv₃ₓ₃(relu(down₁ₓ₁(x)))))), C → b → b → C."""

    zero_init = "up"

    def __init__(self, c: int) -> None:
        super().__init__()
        b = reduced_width(c)
        self.down, self.conv, self.norm, self.up = _conv(c, b, 1), _conv(b, b, 3), _gn(b), _conv(b, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(F.relu(self.norm(self.conv(F.relu(self.down(x))))))


class ConvLight(Delta):
    """conv_light: conv₃ₓ₃(relu(GN(x))), pre-activation so the zero conv is the last layer."""

    zero_init = "conv"

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm, self.conv = _gn(c), _conv(c, c, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.relu(self.norm(x)))


class ConvHeavy(Delta):
    """conv_heavy: conv₃ₓ₃′(relu(GN′(conv₃ₓ₃(relu(GN(x))))))."""

    zero_init = "conv2"

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm1, self.conv1, self.norm2, self.conv2 = _gn(c), _conv(c, c, 3), _gn(c), _conv(c, c, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


# ---------------------------------------------------------------- transformer, x: (B, T, D)


class LayerNormDelta(Delta):
    """norm: tanh(a)·(LN(x) − x); a = 0 at birth."""

    zero_init = "a"

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm, self.a = nn.LayerNorm(d, device=_META), _gate()

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.a) * (self.norm(x) - x)


class LoRA(Delta):
    """lora: U·(V·x), rank 8, no biases; per token, hence causal."""

    zero_init = "up"

    def __init__(self, d: int) -> None:
        super().__init__()
        self.down, self.up = _linear(d, _LORA_RANK, bias=False), _linear(_LORA_RANK, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x))


class CausalSelfAttention(Delta):
    """attention: P(causal MHA(W_qkv·LN(x))), 4 heads, SDPA with is_causal=True (I5)."""

    zero_init = "proj"

    def __init__(self, d: int) -> None:
        super().__init__()
        self.heads = _ATTENTION_HEADS
        self.norm = nn.LayerNorm(d, device=_META)
        self.qkv, self.proj = _linear(d, 3 * d, bias=True), _linear(d, d, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        # (..., T, D) -> (..., heads, T, D / heads)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(-3, -2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(-3, -2).flatten(-2))


class MLP(Delta):
    """mlp: F₂(gelu(F₁(LN(x)))), D → 4D → D; per token, hence causal."""

    zero_init = "fc_out"

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d, device=_META)
        self.fc_in, self.fc_out = _linear(d, 4 * d, bias=True), _linear(4 * d, d, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(F.gelu(self.fc_in(self.norm(x))))


# A constant table of constructors, not a registry: nothing registers at import, and every
# lookup goes through the catalogue first so an unknown name raises.
_BUILDERS: dict[str, dict[str, Callable[[int], Delta]]] = {
    "cnn": {
        "noop": lambda c: Noop(),
        "norm": GroupNormDelta,
        "attention": SqueezeExcite,
        "depthwise": Depthwise,
        "bottleneck": Bottleneck,
        "conv_light": ConvLight,
        "conv_heavy": ConvHeavy,
    },
    "transformer": {
        "noop": lambda d: Noop(),
        "norm": LayerNormDelta,
        "lora": LoRA,
        "attention": CausalSelfAttention,
        "mlp": MLP,
    },
    "mlp": {
        "noop": lambda d: Noop(),
        "norm": LayerNormDelta,
        "lora": LoRA,
        "mlp": MLP,
    },
}


def _materialise(module: Delta, generator: torch.Generator) -> Delta:
    module.to_empty(device=generator.device)
    # modules() walks in registration order, so the draw order is fixed by the class.
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            default_init_(layer, generator)
        elif isinstance(layer, nn.GroupNorm | nn.LayerNorm):
            layer.reset_parameters()  # weight 1, bias 0: no randomness
    if module.zero_init is not None:
        target = getattr(module, module.zero_init)
        with torch.no_grad():
            for p in target.parameters() if isinstance(target, nn.Module) else (target,):
                p.zero_()
    return module


def build_blueprint(topology: str, name: str, dim: int, generator: torch.Generator) -> nn.Module:
    """Build blueprint `name` for a slot of width `dim` (channels C or model width D).

    Raises `UnknownBlueprintError` for a name outside `topology`'s catalogue, `ValueError` for
    a dim its constraint rejects, `HostCatalogueMismatch` if the built module's parameter
    count differs from the catalogue formula. Parameters live on `generator.device`.
    """
    spec = catalogue_for(topology).spec(name)
    dim = _fitting(spec, topology, name, dim)
    builder = _BUILDERS[topology].get(name)
    if builder is None:
        raise HostCatalogueMismatch(f"{topology} catalogue entry {name!r} has no module")
    return _counted(_materialise(builder(dim), generator), spec, topology, name, dim)


def _fitting(spec: BlueprintSpec, topology: str, name: str, dim: int) -> int:
    """`dim` as an int, if the blueprint's constraint accepts it; else `ValueError`."""
    dim = operator.index(dim)
    if not spec.fits(dim):
        raise ValueError(f"{topology} blueprint {name!r} does not fit dim {dim}")
    return dim


def _counted(module: nn.Module, spec: BlueprintSpec, topology: str, name: str, dim: int) -> nn.Module:
    """`module`, if its parameter count equals the catalogue formula; else `HostCatalogueMismatch`."""
    count = sum(p.numel() for p in module.parameters())
    if count != spec.params(dim):
        raise HostCatalogueMismatch(
            f"{topology} blueprint {name!r} at dim {dim}: {count} parameters, formula {spec.params(dim)}"
        )
    return module


def build_extension(catalogue: Catalogue, name: str, dim: int, generator: torch.Generator) -> nn.Module:
    """Build a user blueprint of `catalogue` from its builder (`construct_extension`), its parameter
    count checked against the formula like `build_blueprint`."""
    spec = catalogue.spec(name)
    dim = _fitting(spec, catalogue.topology, name, dim)
    return _counted(construct_extension(catalogue, name, dim, generator), spec, catalogue.topology, name, dim)


def construct_extension(catalogue: Catalogue, name: str, dim: int, generator: torch.Generator) -> nn.Module:
    """Run a user blueprint's builder at `dim` and move the module to `generator.device`.

    The builder runs under a forked CPU RNG seeded from one draw of `generator`, so equal
    generator states give equal modules. A builder that returns no `nn.Module` raises
    `HostCatalogueMismatch`.
    """
    spec = catalogue.spec(name)
    if spec.build is None:
        raise HostCatalogueMismatch(f"{catalogue.topology} blueprint {name!r} is built in, not an extension")
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = spec.build(dim)
    if not isinstance(module, nn.Module):
        raise HostCatalogueMismatch(f"blueprint {name!r}: the builder returned {type(module).__name__}, "
                                    f"not an nn.Module")
    return module.to(generator.device)
