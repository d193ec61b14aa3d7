"""Optimizer parameter groups of a `MorphogeneticModel` (docs/lifecycle.md §8.5).

One named group per part of the model: `host` (the host's parameters, its lr and weight decay; it
also carries `seed_lr` and the stage lr scales), then one per slot holding a module:

    seed:<slot>    lr = seed_lr · stage_lr_scale[stage − TRAINING]    (TRAINING, BLENDING, PROBATIONARY)
    fossil:<slot>  lr = the host's lr

`param_groups` builds them for a new optimizer; `sync_optimizer` follows every `sync_to` (a new
seed gets a fresh group, a culled one loses its group and state, a fossil keeps its state);
`set_lrs` moves the host's lr and seed_lr and re-derives every slot group from them.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from esper.core.errors import ConfigError
from esper.core.stages import Stage
from esper.shell.model import MorphogeneticModel, SeedSlot


def param_groups(model: MorphogeneticModel, *, host_lr: float, seed_lr: float,
                 weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Named parameter groups for a new optimizer: `host`, then one per slot holding a module.

    The host group also carries `seed_lr`, so `sync_optimizer` can create seed groups later.
    """
    host = {"name": "host", "params": list(model.host.parameters()), "lr": host_lr,
            "weight_decay": weight_decay, "seed_lr": seed_lr,
            "stage_lr_scale": tuple(model.lifecycle_config.stage_lr_scale)}
    groups = [host]
    for slot in model.seed_slots():
        if slot.module is not None:
            groups.append(_slot_group(host, slot, {"params": list(slot.module.parameters())}))
    return groups


def _slot_group(host: Mapping[str, Any], slot: SeedSlot, group: dict[str, Any]) -> dict[str, Any]:
    """Set a slot group's name, lr and weight decay: seeds use `seed_lr` × the stage's scale
    (TRAINING, BLENDING, PROBATIONARY), fossils the host's lr."""
    fossil = slot.stage == Stage.FOSSILIZED
    group["name"] = f"{'fossil' if fossil else 'seed'}:{slot.slot_id}"
    scale = host["stage_lr_scale"][slot.stage - Stage.TRAINING] if not fossil else 1.0
    group["lr"] = host["lr"] if fossil else host["seed_lr"] * scale
    group["weight_decay"] = host["weight_decay"]
    return group


def sync_optimizer(optimizer: torch.optim.Optimizer, model: MorphogeneticModel) -> None:
    """Make the optimizer's slot groups match the model's modules, after every `sync_to` (§8.5).

    New seed (E2): a `seed:<slot>` group with zero state. Removed module (cull): its group and
    its state are deleted. Fossilized (E8): the seed group becomes `fossil:<slot>` in place, so
    its parameters keep their optimizer state. The `host` group and other groups are untouched.
    """
    host = _named_group(optimizer, "host")
    for slot in model.seed_slots():
        params = [] if slot.module is None else list(slot.module.parameters())
        keep = False
        for group in [g for g in optimizer.param_groups
                      if g.get("name") in (f"seed:{slot.slot_id}", f"fossil:{slot.slot_id}")]:
            if params and _same_params(group["params"], params):
                _slot_group(host, slot, group)  # a no-op unless the seed fossilized
                keep = True
            else:
                _drop_group(optimizer, group)
        if params and not keep:
            # Copy the host's other hyperparameters (momentum, betas, …) so every group agrees.
            extra = {k: v for k, v in host.items() if k not in ("params", "name", "seed_lr", "stage_lr_scale")}
            optimizer.add_param_group(_slot_group(host, slot, {**extra, "params": params}))


def set_lrs(optimizer: torch.optim.Optimizer, model: MorphogeneticModel, *, host_lr: float, seed_lr: float) -> None:
    """Set the host group's lr and seed_lr, then every slot group's from them (`sync_optimizer`)."""
    host = _named_group(optimizer, "host")
    host["lr"], host["seed_lr"] = host_lr, seed_lr
    sync_optimizer(optimizer, model)


def _named_group(optimizer: torch.optim.Optimizer, name: str) -> dict[str, Any]:
    for group in optimizer.param_groups:
        if group.get("name") == name:
            return group
    raise ConfigError(f"optimizer has no {name!r} parameter group; build it with param_groups(model, …)")


def _same_params(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _drop_group(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> None:
    # By identity: list.remove would compare dicts, hence tensors, with ==.
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g is not group]
    for p in group["params"]:
        optimizer.state.pop(p, None)
