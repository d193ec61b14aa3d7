"""The GPT-2-style transformer host (docs/lifecycle.md §7.3), with an `hf` and a `native` backend.

Both backends build the same module tree with the same parameter names and shapes
(`blocks.i.ln_1`, `blocks.i.attn.c_attn`, …, projection weights stored (in, out) as in GPT-2),
so they draw identical weights from the same generator and their state dicts load into each
other. `hf` stacks `transformers`' `GPT2Block`s; `native` is the same math in plain PyTorch.

Every dropout (embedding, attention weights, residual, MLP) is a `nets.dropout.Dropout` drawing from
the one `dropout_generator` the host is given (the run's dropout stream), never from the global RNG.
"""

import math
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper.core.errors import HostConfigError
from esper.core.seed import SlotSpec
from esper.shell.nets.dropout import Dropout, causal_attention, replace_dropouts
from esper.shell.nets.host_base import (
    Host,
    SlotLayout,
    block_spans,
    materialise,
    require_positive,
    to_layout,
    validate_layout,
)

BACKENDS = ("hf", "native")
INIT_STD = 0.02
HF_ATTENTION = "esper_causal"  # our attention function's name in transformers' AttentionInterface


def default_slots(n_layers: int) -> SlotLayout:
    """early / mid / late after layers ⌊N/3⌋−1, 2⌊N/3⌋−1, N−1 (needs N ≥ 3)."""
    if n_layers < 3:
        raise HostConfigError(f"the default 3-slot layout needs n_layers ≥ 3, got {n_layers}; pass slots=")
    third = n_layers // 3
    return (("early", third - 1), ("mid", 2 * third - 1), ("late", n_layers - 1))


@attrs.frozen(kw_only=True)
class TransformerHostConfig:
    """Vocabulary V, block size L, width D, N layers, h heads, dropout p; slots after layers."""

    KIND = "transformer"

    vocab_size: int
    block_size: int
    d_model: int
    n_layers: int
    n_heads: int
    dropout: float = attrs.field(default=0.0, converter=float)
    backend: str = "hf"
    slots: SlotLayout = attrs.field(converter=to_layout)

    @slots.default
    def _three_slots(self) -> SlotLayout:
        return default_slots(self.n_layers)

    def __attrs_post_init__(self) -> None:
        require_positive("transformer host", vocab_size=self.vocab_size, block_size=self.block_size,
                         d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads)
        if self.d_model % self.n_heads:
            raise HostConfigError(f"transformer host: d_model {self.d_model} not divisible by "
                                  f"n_heads {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise HostConfigError(f"transformer host: dropout {self.dropout} outside [0, 1)")
        if self.backend not in BACKENDS:
            raise HostConfigError(f"transformer host: backend {self.backend!r} not in {BACKENDS}")
        validate_layout(self.slots, self.n_layers)

    def param_count(self) -> int:
        """V·D + L·D + N·(12D² + 13D) + 2D (the head is tied to the token embedding)."""
        d = self.d_model
        return (self.vocab_size + self.block_size) * d + self.n_layers * (12 * d * d + 13 * d) + 2 * d

    def slot_specs(self) -> tuple[SlotSpec, ...]:
        """Features (T, D) per sample, T ≤ L; `feature_shape` records the longest, (L, D)."""
        return tuple(SlotSpec(name, k, i, self.d_model, (self.block_size, self.d_model))
                     for k, (name, i) in enumerate(self.slots))


class TransformerHost(Host):
    """Input (B, T) token ids, T ≤ L; output (B, T, V) logits. Slot k sees the residual stream (B, T, D).

    `generator` draws the initial weights; `dropout_generator` every dropout mask, on the device the
    host trains on (without one, a private CPU generator seeded 0).
    """

    def __init__(self, config: TransformerHostConfig, generator: torch.Generator,
                 dropout_generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        self.slot_specs = config.slot_specs()
        self.spans = block_spans((spec.position for spec in self.slot_specs), config.n_layers)
        drops = torch.Generator().manual_seed(0) if dropout_generator is None else dropout_generator
        with torch.device("meta"):  # no constructor may draw from the global RNG
            self.wte = nn.Embedding(config.vocab_size, config.d_model)
            self.wpe = nn.Embedding(config.block_size, config.d_model)
            self.drop = Dropout(config.dropout, drops)
            blocks = _hf_blocks(config) if config.backend == "hf" else _native_blocks(config, drops)
            self.blocks = nn.ModuleList(blocks)
            self.ln_f = nn.LayerNorm(config.d_model)
        replace_dropouts(self.blocks, drops)  # GPT2Block's own nn.Dropout modules
        materialise(self, generator)
        self._init(generator)

    def _init(self, generator: torch.Generator) -> None:
        """normal(0, 0.02) weights, residual output projections (c_proj) 0.02/√(2N), biases 0, LN (1, 0).

        Modules are visited in registration order, which both backends share, so the same
        generator state yields the same weights in either backend.
        """
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, INIT_STD, generator=generator)
            elif _is_projection(module):
                std = residual_std if name.endswith("c_proj") else INIT_STD
                nn.init.normal_(module.weight, 0.0, std, generator=generator)
                nn.init.zeros_(module.bias)

    def _segment(self, k: int, x: Tensor) -> Tensor:
        if k == 0:
            x = self._embed(x)
        start, stop = self.spans[k]
        for block in self.blocks[start:stop]:
            x = _hidden(block(x))
        if k == self.n_slots:
            x = F.linear(self.ln_f(x), self.wte.weight)  # tied, bias-free head
        return x

    def _embed(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[-1]
        if length > self.config.block_size:
            raise ValueError(
                f"sequence of {length} tokens exceeds the host's block size {self.config.block_size}"
            )
        positions = torch.arange(length, device=tokens.device)
        return self.drop(self.wte(tokens) + self.wpe(positions))


def _is_projection(module: nn.Module) -> bool:
    """GPT-2's `Conv1D` or our `Projection`: a module owning a 2-D weight and a bias."""
    weight = module._parameters.get("weight")
    return weight is not None and weight.dim() == 2 and module._parameters.get("bias") is not None


def _hidden(out: Tensor | tuple[Tensor, ...]) -> Tensor:
    # transformers 5.x's GPT2Block returns the hidden states; 4.x returned a tuple starting with them.
    return out[0] if isinstance(out, tuple) else out


# --- hf backend ------------------------------------------------------------------------------


def _hf_blocks(config: TransformerHostConfig) -> list[nn.Module]:
    # Imported here: loading transformers takes seconds, and only this backend needs it.
    from transformers.models.gpt2.configuration_gpt2 import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    _register_hf_attention()
    p = config.dropout
    gpt2 = GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.d_model,
        n_layer=config.n_layers, n_head=config.n_heads, resid_pdrop=p, embd_pdrop=p, attn_pdrop=p,
        # GPT-2's token ids (50256) lie outside small vocabularies and make transformers log a warning;
        # the blocks never use them.
        bos_token_id=None, eos_token_id=None,
        # `causal_attention`: sdpa (`is_causal=True`) unless weights drop; sdpa's dropout uses the global RNG.
        attn_implementation=HF_ATTENTION,
    )
    return [GPT2Block(gpt2, layer_idx=i) for i in range(config.n_layers)]


def _register_hf_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(HF_ATTENTION, _hf_attention)  # a name → function entry; idempotent


def _hf_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                  dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Tensor, None]:
    """transformers' attention hook for our GPT2Blocks: `causal_attention` with the block's own
    `attn_dropout` (a `Dropout` after `replace_dropouts`); returns (B, T, H, d_h) as sdpa's does."""
    if attention_mask is not None:
        raise ValueError("the host's blocks are causal by construction and take no attention mask")
    out = causal_attention(query, key, value, scaling, module.attn_dropout)
    return out.transpose(1, 2).contiguous(), None


# --- native backend --------------------------------------------------------------------------


def _native_blocks(config: TransformerHostConfig, drops: torch.Generator) -> list[nn.Module]:
    return [NativeBlock(config.d_model, config.n_heads, config.dropout, drops) for _ in range(config.n_layers)]


class Projection(nn.Module):
    """y = x·W + b with W stored (in, out), GPT-2's layout, so hf and native state dicts interchange."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.empty(n_out))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return out.view(*x.shape[:-1], self.weight.shape[1])


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, drops: torch.Generator) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.c_attn = Projection(d_model, 3 * d_model)
        self.c_proj = Projection(d_model, d_model)
        self.attn_dropout = Dropout(dropout, drops)
        self.resid_dropout = Dropout(dropout, drops)

    def forward(self, x: Tensor) -> Tensor:
        width = x.shape[-1]
        head_dim = width // self.n_heads
        q, k, v = (t.unflatten(-1, (self.n_heads, head_dim)).transpose(-3, -2)
                   for t in self.c_attn(x).split(width, dim=-1))
        y = causal_attention(q, k, v, head_dim**-0.5, self.attn_dropout)
        return self.resid_dropout(self.c_proj(y.transpose(-3, -2).flatten(-2)))


class MLP(nn.Module):
    def __init__(self, d_model: int, dropout: float, drops: torch.Generator) -> None:
        super().__init__()
        self.c_fc = Projection(d_model, 4 * d_model)
        self.c_proj = Projection(4 * d_model, d_model)
        self.dropout = Dropout(dropout, drops)

    def forward(self, x: Tensor) -> Tensor:
        # GPT-2's "gelu_new" is the tanh approximation.
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class NativeBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + mlp(LN(x)) — `GPT2Block` without transformers."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, drops: torch.Generator) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout, drops)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, dropout, drops)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))
