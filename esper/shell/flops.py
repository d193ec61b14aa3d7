"""Training FLOPs, counted (docs/runtime.md §9): one real train step per model structure × samples.

    F_step(S)   = FLOPs `FlopCounterMode` counts for one forward + backward of structure S on the
                  first B training samples (the loss of `epoch.loss_and_correct`, no optimizer step)
    f(S)        = round(F_step(S) / B)                                  per-sample training FLOPs
    F_total     = Σ_e f(S_e) · n_e          S_e = the structure trained in epoch e, n_e its samples

Counting follows torch's `flop_counter` conventions: 2 FLOPs per multiply–add of a conv or matmul,
a conv or linear backward counts its input-gradient product only when that input needs a gradient,
and norms, activations, pooling and the loss count 0. The CPU flash-attention kernels, missing from
torch's table, are counted with torch's own SDPA formulas so a CPU count equals a CUDA count.

The measuring step leaves training untouched: parameters, buffers (BatchNorm statistics), `.grad`,
train/eval mode, the host's dropout generator and the global torch RNG are restored, and the caller's
data and augment generators are never read (the batch is the first B training samples, augmented
from a private generator).
"""

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from esper.shell.data.taskdata import TaskData
from esper.shell.epoch import autocast_for, loss_and_correct
from esper.shell.model import MorphogeneticModel, SeedSlot
from esper.shell.nets.dropout import dropout_generators

SlotKey = tuple[str, str | None, bool, bool, bool]
AUGMENT_SEED = 0  # the private augment generator of the measuring step

aten = torch.ops.aten


def _cpu_sdpa_forward(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
                       **kwargs: Any) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# Formulas take shapes (FlopCounterMode wraps them); same counts as torch's CUDA SDPA entries.
CPU_ATTENTION: dict[Any, Any] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_forward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def _slot_key(slot: SeedSlot) -> SlotKey:
    """(slot id, blueprint, runs in the forward, its parameters get gradients, its input passes gradient).

    `SeedSlot.forward` runs the seed whenever the slot holds a module with knobs (TRAINING through
    FOSSILIZED): TRAINING's α = 0 still computes δ (straight-through, δ gets g), BLENDING's blend
    keeps δ in the graph whatever α is. An empty, embargoed or culled slot is the identity."""
    seed = slot.module
    if seed is None or slot.knobs is None:
        return (slot.slot_id, None, False, False, False)
    learns = any(p.requires_grad for p in seed.parameters())
    return (slot.slot_id, slot.blueprint, True, learns, slot.knobs.input_grad)


def structure_key(model: MorphogeneticModel) -> tuple[SlotKey, ...]:
    """What fixes the FLOPs of a train step besides the host: one `_slot_key` per slot.

    `input_grad` is part of it: a seed whose first layer is a conv (bottleneck, depthwise) counts
    that conv's input-gradient product only when its input is not detached."""
    return tuple(_slot_key(slot) for slot in model.seed_slots())


@contextlib.contextmanager
def _untouched(model: MorphogeneticModel) -> Iterator[None]:
    """Restore mode, `.grad`, buffers, dropout generators and the global RNG (CPU, and the model's CUDA
    device) on exit."""
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    was_training = model.training
    grads = [(p, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    drops = [(g, g.get_state()) for g in dropout_generators(model)]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if cuda else None
    for p, _ in grads:
        p.grad = None
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, grad in grads:
            p.grad = grad
        for g, state in drops:
            g.set_state(state)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
        model.train(was_training)


def _first_batch(data: TaskData, batch_size: int) -> tuple[Tensor, Tensor, int]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = min(batch_size, data.n_train)
    if n < 1:
        raise ValueError(f"{data.preset.name}: no training samples to count FLOPs on")
    x, y = data.batch("train", torch.arange(n, device=data.index_device))
    return x, y, n


def train_flops_per_sample(model: MorphogeneticModel, data: TaskData, *, batch_size: int = 8,
                           autocast: torch.dtype | None = None) -> int:
    """f(S) for the model's current structure: counted FLOPs of one train step / samples in it."""
    x, y, n = _first_batch(data, batch_size)
    device = next(model.parameters()).device
    generator = torch.Generator(device=x.device).manual_seed(AUGMENT_SEED)
    inputs = data.prepare_batch(x, True, generator)
    with _untouched(model), torch.enable_grad():
        model.train()
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
            with autocast_for(device, autocast):  # as in train_epoch: the counted ops are the trained ones
                logits = model(inputs)
            loss_sum, _, count = loss_and_correct(logits, y)
            (loss_sum / count).backward()
    return round(counter.get_total_flops() / n)


class FlopMeter:
    """A run's training-FLOP total: f(S) measured once per structure, × the samples trained with it."""

    def __init__(self, batch_size: int = 8) -> None:
        self.batch_size = batch_size
        self.total = 0
        self.measurements = 0  # real counting steps run (one per distinct structure)
        self._cache: dict[tuple[Any, ...], int] = {}

    def per_sample(self, model: MorphogeneticModel, data: TaskData, autocast: torch.dtype | None = None) -> int:
        # The host config and the sample shape complete the key: a meter may see several models.
        key = (model.host.config, structure_key(model), tuple(data.train_inputs.shape[1:]), autocast)
        if key not in self._cache:
            self._cache[key] = train_flops_per_sample(model, data, batch_size=self.batch_size, autocast=autocast)
            self.measurements += 1
        return self._cache[key]

    def add_epoch(self, model: MorphogeneticModel, data: TaskData, samples: int,
                  autocast: torch.dtype | None = None) -> int:
        """Add f(S) × `samples` (the samples trained this epoch) to `total`; returns the added FLOPs."""
        if samples < 0:
            raise ValueError(f"samples must be >= 0, got {samples}")
        flops = self.per_sample(model, data, autocast) * samples
        self.total += flops
        return flops
