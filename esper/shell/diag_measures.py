"""The measurements behind the `diag.*` events (docs/runtime.md §4.5); esper.shell.diagnostics decides when.

Within epoch e (training, then after its fetch), on e's weights θ:

    layer grads   sq_l += Σ_{tensors t of layer l} ‖g_t‖²  after each batch's backward (one _foreach_norm)
    isolation     per slot whose seed input is still detached (docs/lifecycle.md §5): a batch counts when a
                  non-zero gradient reaches the seed's input, i.e. flows back into the host through δ
    weights       ‖W_l‖ = sqrt(Σ_{t ∈ l} ‖θ_t‖²)
    activations   probe pass in eval mode over the fixed held-out subset X: per occupied slot h's mean,
                  std and RMS, RMS of δ(h), α, and RMS(δ)/RMS(h)
    sharpness     S = mean_k L(θ + 0.01·‖θ_t‖·d_k,t) − L(θ) on X, d_k,t = r/‖r‖ with r ~ N(0, I) per tensor t
                  from the run's `diag` generator; `functional_call` on a dict of moved tensors, so θ is
                  never written (no in-place change, no state_dict clone)

X is the first 512 images (16 text windows) of the held-out split. A layer is the module owning a
parameter tensor; a seed's layers are named `seed:<slot>.<path>`. Everything stays on the device.
"""

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from esper.shell.data.taskdata import TaskData
from esper.shell.epoch import autocast_for, loss_and_correct
from esper.shell.model import MorphogeneticModel, SeedSlot

SUBSET = {"images": 512, "text": 16}
STEP = 0.01  # the sharpness perturbation's size, relative to each tensor's norm


def probe_subset(data: TaskData) -> tuple[Tensor, Tensor]:
    """The fixed held-out subset X (and its targets) that activations and sharpness evaluate."""
    n = min(SUBSET[data.preset.modality], data.n_heldout)
    x, y = data.batch("heldout", slice(0, n))
    return data.prepare_batch(x, False), y


def layers_of(model: MorphogeneticModel) -> tuple[list[nn.Parameter], list[str], Tensor]:
    """Parameters, the layer names, and for each parameter the index of its layer (on the device)."""
    rename = {f"slots.{slot.index}.seed": f"seed:{slot.slot_id}" for slot in model.seed_slots()}
    params, names, owner = [], [], []
    for name, param in model.named_parameters():
        layer = name.rsplit(".", 1)[0] if "." in name else name
        for prefix, short in rename.items():
            if layer == prefix or layer.startswith(prefix + "."):
                layer = short + layer[len(prefix):]
        if layer not in names:
            names.append(layer)
        params.append(param)
        owner.append(names.index(layer))
    device = params[0].device
    return params, names, torch.tensor(owner, device=device)


def _per_layer(sq: Tensor, owner: Tensor, n_layers: int) -> Tensor:
    return sq.new_zeros(n_layers).index_add_(0, owner, sq)


class LayerGrads:
    """`TrainProbe`: each batch's squared gradient norm per parameter tensor, summed on the device."""

    def __init__(self, model: MorphogeneticModel) -> None:
        self.params, self.names, self.owner = layers_of(model)
        self.sq = torch.zeros(len(self.params), device=self.owner.device)
        self.seconds = 0.0  # host time spent queueing (the whole cost on CPU)
        self._rows: dict[tuple[int, ...], Tensor] = {}  # device index per set of present gradients, copied once

    def after_backward(self) -> None:
        started = time.perf_counter()
        present = [i for i, p in enumerate(self.params) if p.grad is not None]
        if present:
            grads = [self.params[i].grad for i in present]
            norms = torch.stack(torch._foreach_norm(grads)).float()  # type: ignore[arg-type]
            if len(present) == len(self.params):
                self.sq += norms * norms
            else:
                key = tuple(present)
                if key not in self._rows:
                    self._rows[key] = torch.tensor(present, device=self.sq.device)
                self.sq.index_add_(0, self._rows[key], norms * norms)
        self.seconds += time.perf_counter() - started

    def per_layer(self) -> Tensor:
        """Σ over batches of each layer's squared gradient norm."""
        return _per_layer(self.sq, self.owner, len(self.names))


def weight_norms(model: MorphogeneticModel) -> tuple[list[str], Tensor]:
    params, names, owner = layers_of(model)
    norms = torch.stack(torch._foreach_norm([p.detach() for p in params])).float()
    return names, _per_layer(norms * norms, owner, len(names)).sqrt()


def isolated_slots(model: MorphogeneticModel) -> list[SeedSlot]:
    """Slots holding a seed whose input gradient is not released (it must read a detached h)."""
    return [s for s in model.seed_slots() if s.module is not None and s.knobs is not None and not s.knobs.input_grad]


class IsolationWatch:
    """Counts, per isolated slot, the training batches whose gradient reached the seed's input.

    A correct slot hands its seed a detached h, so the forward pre-hook sees no input that requires a
    gradient and does nothing. Otherwise it inserts an identity view between h and the seed and hooks
    the view: the hook sees only the gradient through δ (not the direct path h → y)."""

    def __init__(self, model: MorphogeneticModel) -> None:
        self.slots = [s.slot_id for s in isolated_slots(model)]
        device = next(model.parameters()).device
        self.counts = torch.zeros(len(self.slots), dtype=torch.long, device=device)
        self.seconds = 0.0
        self._handles = [slot.module.register_forward_pre_hook(partial(self._before_seed, i))  # type: ignore[union-attr]
                         for i, slot in enumerate(isolated_slots(model))]

    def _before_seed(self, i: int, _module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        x = args[0]
        if not (torch.is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad):
            return None
        started = time.perf_counter()
        view = x.view_as(x)
        view.register_hook(partial(self._gradient, i))
        self.seconds += time.perf_counter() - started
        return (view, *args[1:])

    def _gradient(self, i: int, grad: Tensor) -> None:
        self.counts[i] += (grad != 0).any()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _slot_stats(stats: dict[str, Tensor], slot: SeedSlot, h: Tensor, d: Tensor) -> None:
    h, d = h.detach().float(), d.detach().float()
    host_rms, delta_rms = h.pow(2).mean().sqrt(), d.pow(2).mean().sqrt()
    alpha = slot.alpha.detach().float()
    stats[slot.slot_id] = torch.stack([h.mean(), h.std(), host_rms, delta_rms, alpha, delta_rms / host_rms])


def _in_eval(model: nn.Module, run: Callable[[], Tensor]) -> Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return run()
    finally:
        model.train(was_training)


def activation_stats(model: MorphogeneticModel, x: Tensor, autocast: torch.dtype | None) -> dict[str, Tensor]:
    """Per occupied slot, [host mean, std, RMS, δ RMS, α, ratio] on one eval-mode pass over x."""
    stats: dict[str, Tensor] = {}
    inputs: dict[str, Tensor] = {}
    handles = []
    for slot in model.seed_slots():
        if slot.module is None or slot.knobs is None:
            continue
        handles.append(slot.register_forward_pre_hook(lambda _m, args, s=slot: inputs.__setitem__(s.slot_id, args[0])))
        handles.append(slot.module.register_forward_hook(
            lambda _m, _a, out, s=slot: _slot_stats(stats, s, inputs[s.slot_id], out)))
    try:
        with autocast_for(x.device, autocast):
            _in_eval(model, lambda: model(x))
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _unit(p: Tensor, generator: torch.Generator) -> Tensor:
    r = torch.randn(p.shape, generator=generator, device=p.device, dtype=torch.float32)
    return (r / r.norm().clamp_min(torch.finfo(torch.float32).tiny)).to(p.dtype)


def sharpness(model: MorphogeneticModel, x: Tensor, y: Tensor, generator: torch.Generator, directions: int,
              autocast: torch.dtype | None) -> Tensor:
    """mean_k L(θ + 0.01·‖θ_t‖·d_k,t) − L(θ) on (x, y) (0-dim, on the device)."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss_at(weights: dict[str, Tensor]) -> Tensor:
        with autocast_for(x.device, autocast):
            logits = functional_call(model, (weights, buffers), (x,))
        total, _, n = loss_and_correct(logits, y)
        return total / n

    def run() -> Tensor:
        base = loss_at(params)
        gaps = [loss_at({name: p + STEP * p.norm() * _unit(p, generator) for name, p in params.items()}) - base
                for _ in range(directions)]
        return torch.stack(gaps).mean()

    return _in_eval(model, run)
