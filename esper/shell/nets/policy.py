"""The PPO controller's network (docs/rl.md §4): an LSTM (or feed-forward) trunk, four sequential masked
heads and a value head.

Time index: step t is one epoch boundary; h_t summarises o_0 … o_t (zeros before step 0).

    x_t  = ReLU(LN(W_f o_t + b_f))                            features      [H]
    h_t  = LN(LSTM(x_t, (h, c)_{t−1}))                         memory, trunk "lstm"  [H]
    h_t  = LN(ReLU(W_m x_t + b_m))                             memory, trunk "mlp": o_t only  [H]
    z_op = MLP_op(h_t)                                                       [4]
    z_sl = MLP_slot([h_t, onehot(op_t)])                                     [S]
    z_bp = MLP_bp([h_t, onehot(slot_t)])                                     [K]
    z_tm = MLP_tempo([h_t, onehot(slot_t), onehot(bp_t)])                    [T3]
    V_t  = MLP_v(h_t)                                          never sees actions

Each MLP is Linear(· → head_hidden) → ReLU → Linear(head_hidden → ·). Heads sample in order
op → slot → blueprint → tempo through `esper.core.sampling` (masked logits, Gumbel-max,
log-prob u_h · logπ_h(a_h), normalised entropy u_h · Ĥ_h). Irrelevant heads are conditioned on
index 0 (the canonical action), so stored values there never reach any output or gradient.

`act` runs one step for N envs with a carried (h, c); `evaluate` runs whole [B, T] sequences from
zeros with teacher forcing. The "mlp" trunk keeps that interface with an empty carried state
(h, c each [1, N, 0]), passed through unchanged, so collect, update and the trained-policy run
need not know which trunk they drive. Both share `_heads`, so the first PPO minibatch reproduces the rollout.
The policy always computes in float32 with autocast off.

Init (deterministic from the passed generator; the global RNG is untouched): every Linear
orthogonal with gain √2 and bias 0, the last layer of each policy head gain 0.01, the last value
layer gain 1; LSTM weights orthogonal (gain 1), biases 0 except the forget-gate quarter [H:2H]
of `bias_ih` = 1; LayerNorm weight 1, bias 0. The op head's last bias is `op_prior` (zeros by default),
the untrained policy's log-prior over (WAIT, GERMINATE, CULL, FOSSILIZE).
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper.core.sampling import (
    N_OPS,
    MaskTensors,
    Noise,
    blueprint_mask,
    canonical,
    gumbel_argmax,
    head_entropy,
    masked_logits,
    relevance,
    slot_mask,
    tempo_mask,
)

_META = torch.device("meta")  # declare shapes only; `_initialise` draws every value from the generator
HiddenState = tuple[Tensor, Tensor]
TRUNKS: tuple[str, ...] = ("lstm", "mlp")
Chooser = Callable[[int, Tensor, Tensor], Tensor]  # (head, masked logits, mask) -> chosen index


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden, device=_META), nn.ReLU(),
                         nn.Linear(d_hidden, d_out, device=_META))


class PolicyNet(nn.Module):
    """Actor-critic over the factored action space (op, slot, blueprint, tempo); recurrent unless trunk "mlp"."""

    def __init__(self, obs_dim: int, n_slots: int, n_blueprints: int, n_tempo: int = 3, hidden: int = 128,
                 head_hidden: int = 64, masked_logit: float = -1e4,
                 generator: torch.Generator | None = None, trunk: str = "lstm",
                 op_prior: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)) -> None:
        super().__init__()
        if trunk not in TRUNKS:
            raise ValueError(f"trunk must be one of {', '.join(TRUNKS)}, got {trunk!r}")
        self.obs_dim, self.n_slots, self.n_blueprints, self.n_tempo = obs_dim, n_slots, n_blueprints, n_tempo
        self.hidden, self.masked_logit, self.trunk = hidden, masked_logit, trunk
        self.features = nn.Sequential(nn.Linear(obs_dim, hidden, device=_META),
                                      nn.LayerNorm(hidden, device=_META), nn.ReLU())
        if trunk == "lstm":
            self.lstm = nn.LSTM(hidden, hidden, num_layers=1, batch_first=True, device=_META)
        else:
            self.memory = nn.Sequential(nn.Linear(hidden, hidden, device=_META), nn.ReLU())
        self.memory_norm = nn.LayerNorm(hidden, device=_META)
        self.op_head = _mlp(hidden, head_hidden, N_OPS)
        self.slot_head = _mlp(hidden + N_OPS, head_hidden, n_slots)
        self.blueprint_head = _mlp(hidden + n_slots, head_hidden, n_blueprints)
        self.tempo_head = _mlp(hidden + n_slots + n_blueprints, head_hidden, n_tempo)
        self.value_head = _mlp(hidden, head_hidden, 1)
        self._initialise(generator)
        with torch.no_grad():
            self.op_head[-1].bias.copy_(torch.tensor(op_prior, dtype=torch.float32))

    # ------------------------------------------------------------------ init

    def _initialise(self, generator: torch.Generator | None) -> None:
        """Materialise on the generator's device and draw in registration order (generator None:
        torch's default generator, as torch.nn's own init would)."""
        self.to_empty(device=generator.device if generator is not None else torch.device("cpu"))
        last_layers = {self.op_head[-1]: 0.01, self.slot_head[-1]: 0.01, self.blueprint_head[-1]: 0.01,
                       self.tempo_head[-1]: 0.01, self.value_head[-1]: 1.0}
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.orthogonal_(module.weight, gain=last_layers.get(module, math.sqrt(2.0)),
                                        generator=generator)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm):
                    module.reset_parameters()  # weight 1, bias 0: no randomness
                elif isinstance(module, nn.LSTM):
                    self._initialise_lstm(module, generator)

    def _initialise_lstm(self, lstm: nn.LSTM, generator: torch.Generator | None) -> None:
        nn.init.orthogonal_(lstm.weight_ih_l0, generator=generator)
        nn.init.orthogonal_(lstm.weight_hh_l0, generator=generator)
        nn.init.zeros_(lstm.bias_ih_l0)
        nn.init.zeros_(lstm.bias_hh_l0)
        # Gate order (i, f, g, o): a forget bias of 1 keeps the cell's memory at the start of training.
        lstm.bias_ih_l0[self.hidden:2 * self.hidden].fill_(1.0)

    # ------------------------------------------------------------------ trunk

    def initial_state(self, n: int) -> HiddenState:
        """Zero (h, c), each [1, n, hidden] (trunk "mlp": [1, n, 0]): the state before step 0 of an episode."""
        width = self.hidden if self.trunk == "lstm" else 0
        zeros = torch.zeros(1, n, width, device=self.memory_norm.weight.device)
        return zeros, zeros.clone()

    def _memory(self, obs: Tensor, hc: HiddenState | None) -> tuple[Tensor, HiddenState]:
        """obs [B, T, D] → h [B, T, H] and the final (h, c); the feed-forward trunk hands `hc` back as is."""
        x = self.features(obs.float())
        if self.trunk == "mlp":
            b = obs.shape[0]
            return self.memory_norm(self.memory(x)), hc if hc is not None else self.initial_state(b)
        out, hc_next = self.lstm(x, hc)
        return self.memory_norm(out), hc_next

    def _value(self, h: Tensor) -> Tensor:
        return self.value_head(h).squeeze(-1)

    # ------------------------------------------------------------------ heads

    def _onehot(self, index: Tensor, n: int, like: Tensor) -> Tensor:
        return F.one_hot(index, n).to(like.dtype)

    def _op_logits(self, h: Tensor) -> Tensor:
        return self.op_head(h)

    def _slot_logits(self, h: Tensor, op: Tensor) -> Tensor:
        return self.slot_head(torch.cat([h, self._onehot(op, N_OPS, h)], -1))

    def _blueprint_logits(self, h: Tensor, slot: Tensor) -> Tensor:
        return self.blueprint_head(torch.cat([h, self._onehot(slot, self.n_slots, h)], -1))

    def _tempo_logits(self, h: Tensor, slot: Tensor, blueprint: Tensor) -> Tensor:
        parts = [h, self._onehot(slot, self.n_slots, h), self._onehot(blueprint, self.n_blueprints, h)]
        return self.tempo_head(torch.cat(parts, -1))

    def _heads(self, h: Tensor, masks: MaskTensors, choose: Chooser,
               with_entropy: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """Run op → slot → blueprint → tempo; `choose(head, masked_logits, mask)` gives each index.

        Returns actions [..., 4] (canonical: irrelevant heads 0), log-probs and (if asked)
        normalised entropies, both already weighted by u(op).
        """
        op_masked = masked_logits(self._op_logits(h), masks.op, self.masked_logit)
        op = choose(0, op_masked, masks.op)
        u = relevance(op)
        s_mask = slot_mask(masks, op, u)
        s_masked = masked_logits(self._slot_logits(h, op), s_mask, self.masked_logit)
        slot = canonical(op, choose(1, s_masked, s_mask), 1, u)
        b_mask = blueprint_mask(masks, op, slot, u)
        b_masked = masked_logits(self._blueprint_logits(h, slot), b_mask, self.masked_logit)
        blueprint = canonical(op, choose(2, b_masked, b_mask), 2, u)
        t_mask = tempo_mask(masks, op, u)
        t_masked = masked_logits(self._tempo_logits(h, slot, blueprint), t_mask, self.masked_logit)
        tempo = canonical(op, choose(3, t_masked, t_mask), 3, u)

        actions = torch.stack([op, slot, blueprint, tempo], -1)
        pairs = ((op_masked, masks.op), (s_masked, s_mask), (b_masked, b_mask), (t_masked, t_mask))
        logp = torch.stack([_log_prob(z, a) for (z, _), a in zip(pairs, actions.unbind(-1), strict=True)], -1)
        if not with_entropy:
            return actions, u * logp, None
        ent = torch.stack([head_entropy(z, m) for z, m in pairs], -1)
        return actions, u * logp, u * ent

    # ------------------------------------------------------------------ API

    @torch.no_grad()
    def act(self, obs: Tensor, masks: MaskTensors, hc: HiddenState, noise: Noise,
            deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor, HiddenState]:
        """One step for N envs: obs [N, D], masks with leading [N], hc ([1, N, H], [1, N, H]).

        Returns actions [N, 4] int64, logp [N, 4] (u-weighted), value [N] and the next (h, c).
        Deterministic mode takes the argmax of each masked head in the same order.
        """
        uniforms = (noise.op, noise.slot, noise.blueprint, noise.tempo)

        def choose(head: int, masked: Tensor, mask: Tensor) -> Tensor:
            del mask  # the masked logits already carry it
            return masked.argmax(-1) if deterministic else gumbel_argmax(masked, uniforms[head])

        with torch.autocast(obs.device.type, enabled=False):
            out, hc_next = self._memory(obs[:, None], hc)
            h = out[:, 0]
            actions, logp, _ = self._heads(h, masks, choose, with_entropy=False)
            return actions, logp, self._value(h), hc_next

    def evaluate(self, obs: Tensor, actions: Tensor,
                 masks: MaskTensors) -> tuple[Tensor, Tensor, Tensor]:
        """Whole sequences from a zero state with teacher forcing: obs [B, T, D], actions [B, T, 4],
        masks with leading [B, T]. Returns logp [B, T, 4], ent_norm [B, T, 4], value [B, T]."""
        stored = actions.long().unbind(-1)

        def choose(head: int, masked: Tensor, mask: Tensor) -> Tensor:
            del masked, mask
            return stored[head]

        with torch.autocast(obs.device.type, enabled=False):
            h, _ = self._memory(obs, None)
            _, logp, ent = self._heads(h, masks, choose, with_entropy=True)
            assert ent is not None
            return logp, ent, self._value(h)


def _log_prob(masked: Tensor, index: Tensor) -> Tensor:
    return torch.log_softmax(masked, -1).gather(-1, index[..., None]).squeeze(-1)
