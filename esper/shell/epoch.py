"""One epoch of training and one validation pass, with every gate input the lifecycle asked for
(docs/runtime.md §2.3–§2.4). Everything accumulates on the device; the caller fetches it once.

Train: a fresh permutation, last partial batch dropped; after `backward` and before the step,
the squared gradient norms of the host and of each measured seed are added on the device
(`grad_ratio`'s S terms, docs/lifecycle.md §3.2). Validation: eval mode, every held-out sample once,
all variants of the measurement plan (the real model, each α→0 ablation, each α→1 shadow) in
one batched pass per batch; train mode is restored even if validation raises.

Several ranks (esper.shell.data_parallel): each trains on its shard of every batch through the DDP
wrapper and validates its part of every held-out chunk; the sums are all-reduced on the device, so the
caller's one fetch reads the global numbers on every rank.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from esper.shell.compiled import CompiledSteps
from esper.shell.data.taskdata import TaskData
from esper.shell.data_parallel import (
    all_reduce_sums,
    average_running_stats,
    local_mean_divisor,
    shard_rows,
    shard_slice,
)
from esper.shell.dist import Ranks
from esper.shell.model import MorphogeneticModel

# Split a validation batch so that V variants × its samples (images) or windows (text) stay under this
# (§2.4). The variants share their prefix (esper.shell.variant_tree), so only the segments after the last
# varied slot see V × chunk rows; earlier ones see fewer.
MAX_TILED = {"images": 4_000, "text": 256}


class TrainProbe(Protocol):
    """A diagnostic that reads each batch's gradients after `backward`, before clipping and the step
    (esper.shell.diagnostics); it must only queue device work, never sync."""

    def after_backward(self) -> None: ...


@attrs.define
class TrainSums:
    """Device accumulators of one training epoch."""

    loss: Tensor
    correct: Tensor
    count: Tensor
    host_sq: Tensor
    seed_sq: dict[str, Tensor]
    batches: int = 0


def _sq_norm(tensors: list[Tensor], like: Tensor) -> Tensor:
    """Σ‖g‖² over tensors (missing gradients count as zero)."""
    grads = [t.grad for t in tensors if t.grad is not None]
    if not grads:
        return like.new_zeros(())
    return torch.stack(torch._foreach_norm(grads)).float().pow(2).sum()


def autocast_for(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """bf16 autocast for forward passes when asked; the loss is always computed in fp32."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def loss_and_correct(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, int]:
    """Summed cross-entropy and correct count per sample (images) or per token (text)."""
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_targets = targets.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_targets, reduction="sum")
    correct = (flat_logits.argmax(-1) == flat_targets).sum()
    return loss, correct, flat_targets.numel()


def train_epoch(
    model: MorphogeneticModel, optimizer: torch.optim.Optimizer, data: TaskData, *,
    batch_size: int, data_gen: torch.Generator, augment_gen: torch.Generator,
    measured: Sequence[str], max_batches: int | None = None, grad_clip: float | None = None,
    autocast: torch.dtype | None = None, probe: TrainProbe | None = None, ranks: Ranks | None = None,
    forward: torch.nn.Module | None = None, steps: CompiledSteps | None = None,
) -> TrainSums:
    """Train every parameter group for one epoch; `measured` slots get gradient sums, `probe` sees
    every batch's gradients. With several `ranks`, this rank's shard of every batch goes through
    `forward` (the model's DDP wrapper); with `steps`, the forward, loss and gradient sums run compiled."""
    ranks = ranks or Ranks()
    net = forward or model
    model.train()
    device = next(model.parameters()).device
    zero = torch.zeros((), device=device)
    sums = TrainSums(zero.clone(), zero.clone(), zero.clone(), zero.clone(),
                     {slot: zero.clone() for slot in measured})
    host_params = list(model.host.parameters())
    seed_params = {slot: list(model.slot(slot).module.parameters()) for slot in measured}
    # (global rows, this rank's rows) of each batch, all drawn before the first is read: the streamed
    # path's loader reads ahead through the list (docs/runtime.md §5.7); the resident path gathers each.
    shards = [(len(index), shard_rows(index, ranks))
              for index in data.train_batches(batch_size, data_gen, max_batches=max_batches)]
    for (global_rows, rows), (x, y) in zip(shards, data.batches("train", [r for _, r in shards]), strict=True):
        if steps is None:
            with autocast_for(device, autocast):
                logits = net(data.prepare_batch(x, True, augment_gen))
            loss_sum, correct, n = loss_and_correct(logits, y)
        else:
            with autocast_for(device, autocast):  # as eager: the batch prepared under the same autocast
                x = data.prepare_batch(x, True, augment_gen)
            loss_sum, correct, n = _compiled_forward(steps, model, measured, x, y, autocast)
        optimizer.zero_grad(set_to_none=True)
        (loss_sum / local_mean_divisor(n, len(rows), global_rows, ranks)).backward()
        _add_grad_sums(sums, host_params, seed_params, zero,
                       None if steps is None else steps.functions(model, measured)["grads"])
        if probe is not None:
            probe.after_backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        sums.loss += loss_sum.detach()
        sums.correct += correct
        sums.count += n
        sums.batches += 1
    sums.loss, sums.correct, sums.count = all_reduce_sums([sums.loss, sums.correct, sums.count], ranks)
    average_running_stats(model, ranks)
    return sums


def _compiled_forward(steps: CompiledSteps, model: MorphogeneticModel, measured: Sequence[str], x: Tensor,
                      y: Tensor, autocast: torch.dtype | None) -> tuple[Tensor, Tensor, int]:
    """`loss_and_correct(model(x), y)` through this structure's compiled train step (static inputs under
    CUDA graphs)."""
    steps.begin_step()
    loss_sum, correct = steps.functions(model, measured)["train"](
        model, steps.static_input(x, "x"), steps.static_input(y, "y"), autocast)
    return loss_sum, correct, y.numel()


def _add_grad_sums(sums: TrainSums, host_params: list[Tensor], seed_params: dict[str, list[Tensor]],
                   zero: Tensor, compiled: Callable[..., tuple[Tensor, list[Tensor]]] | None) -> None:
    """S_host and each measured seed's S added to the epoch's sums, eagerly or by the compiled function."""
    if compiled is None:
        sums.host_sq += _sq_norm(host_params, zero)
        for slot, params in seed_params.items():
            sums.seed_sq[slot] += _sq_norm(params, zero)
        return
    host_sq, seed_sq = compiled(host_params, list(seed_params.values()), zero)
    sums.host_sq += host_sq
    for slot, sq in zip(seed_params, seed_sq, strict=True):
        sums.seed_sq[slot] += sq


def seeds_finite(model: MorphogeneticModel, sums: TrainSums) -> dict[str, Tensor]:
    """Per measured slot: the epoch's seed gradient sum and every seed parameter are finite."""
    out = {}
    for slot, sq in sums.seed_sq.items():
        params = list(model.slot(slot).module.parameters())
        params_ok = torch.stack([torch.isfinite(p).all() for p in params]).all()
        out[slot] = torch.isfinite(sq) & params_ok
    return out


def _variant_logits(model: MorphogeneticModel, data: TaskData, x: Tensor, variants: Sequence[Mapping[str, float]],
                    autocast: torch.dtype | None, steps: CompiledSteps | None) -> Tensor:
    """[V, B, ...] logits of every variant: `forward_variants`, or the structure's compiled pass."""
    with autocast_for(x.device, autocast):
        prepared = data.prepare_batch(x, False)
        if steps is None:
            return model.forward_variants(prepared, variants)
    return steps.validate_logits(model, prepared, variants, autocast)


@attrs.define
class ValidationSums:
    loss: Tensor  # [V] summed cross-entropy per variant
    correct: Tensor  # [V]
    count: int
    confusion: Tensor | None = None  # [C, C] the real model's (true, predicted) counts, when asked


def _chunks(data: TaskData, batch_size: int, n_variants: int) -> Iterator[slice]:
    limit = max(1, MAX_TILED[data.preset.modality] // n_variants)
    for block in data.heldout_batches(batch_size):
        for start in range(block.start, block.stop, limit):
            yield slice(start, min(start + limit, block.stop))


def validate(model: MorphogeneticModel, data: TaskData, variants: Sequence[Mapping[str, float]], *,
             batch_size: int, autocast: torch.dtype | None = None, confusion: bool = False,
             ranks: Ranks | None = None, steps: CompiledSteps | None = None) -> ValidationSums:
    """Loss and accuracy of every variant over the full held-out split, in eval mode; with
    `confusion`, also the real model's confusion matrix (one bincount per batch, on the device).
    With several `ranks`, each its part of every chunk, summed over ranks (count: the whole split's targets)."""
    ranks = ranks or Ranks()
    device = next(model.parameters()).device
    n, classes = len(variants), data.n_classes
    loss, correct, count = torch.zeros(n, device=device), torch.zeros(n, device=device), 0
    matrix = torch.zeros(classes * classes, dtype=torch.long, device=device) if confusion else None
    model.eval()
    try:
        with torch.inference_mode():
            parts = [part for part in (shard_slice(chunk, ranks) for chunk in _chunks(data, batch_size, n))
                     if part.start != part.stop]
            for x, y in data.batches("heldout", parts):
                logits = _variant_logits(model, data, x, variants, autocast, steps)
                flat = logits.reshape(n, -1, logits.shape[-1]).float()
                targets = y.reshape(-1).repeat(n)
                per = F.cross_entropy(flat.reshape(-1, flat.shape[-1]), targets, reduction="none")
                loss += per.reshape(n, -1).sum(1)
                predicted = flat.argmax(-1)
                correct += (predicted == y.reshape(1, -1)).sum(1)
                count += y.numel()
                if matrix is not None:
                    matrix += torch.bincount(y.reshape(-1) * classes + predicted[0], minlength=classes * classes)
    finally:
        model.train()
    if ranks.distributed:
        loss, correct = all_reduce_sums([loss, correct], ranks)
        matrix = None if matrix is None else all_reduce_sums([matrix], ranks)[0]
        count = data.n_heldout * data.heldout_labels[0].numel()
    return ValidationSums(loss, correct, count, None if matrix is None else matrix.reshape(classes, classes))
