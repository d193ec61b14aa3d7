r"""The PPO observation (docs/rl.md §2): one feature table, a plain-Python packer and a pure tensor encoder.

Time index: step t is boundary b = t + 1. `o_t` encodes the recorded view of that boundary
(`lifecycle.record`, or `lifecycle.rollback` after a governor panic), the tracker after its update
and this epoch's metrics, before the controller picks `a_t`. Every per-seed input is read from the
view, whose `record` overwrites all measurements (None where not measured), so nothing is stale.

Every entry i of the table is

    o[i] = clamp(scale_i · safe(raw_i, default_i), lo_i, hi_i)          (scalar rows)
    o[i] = 1[safe(raw_i, 0) > 0.5]                                      (binary rows)
    safe(v, d) = v if v is finite else d                                (None is packed as NaN)

with the raw values (E epochs, L0 the random-guess loss, P_host host params, P_s = n_params of
slot s's seed while it holds a module, i.e. TRAINING…FOSSILIZED, P_seeds = Σ_s P_s):

    epoch_frac = b/E      train_loss = ℓ_train/L0     val_loss = ℓ_val/L0
    val_loss_delta = (ℓ_val,prev − ℓ_val)/L0 (0 at t = 0)   val_acc_delta = 10·(acc − acc_prev)
    plateau = p/10        growth = ln(1 + P_seeds/P_host)       budget_left = (M − used)/M, 1 if M = 0
    seed_age = age/E      contribution = 10·c (0 and measured = 0 when c is None)
    stage_gain = 10·(acc − seed.acc_at_stage_start)   param_share = ln(1 + P_s/P_host)
    tempo = ramp epochs/8   cooldown_left = lifecycle.cooldown_left/cooldown_records

Layout: D(S, K) = 15 + S·(18 + K): the 15 run features, then one block of 18 + K per slot in the
host's slot order. A disabled slot's block is all zero (enabled = 0 included). Stage one-hot codes:
DORMANT, GERMINATED, TRAINING, BLENDING, PROBATIONARY, FOSSILIZED, COOLDOWN (CULLED, EMBARGOED,
RESETTING). The blueprint one-hot uses the catalogue's `germinable` order and is set for any seed in
the slot (a cooling seed keeps its blueprint); all zero when the slot is empty.

`encode_observation` is pure, shape-polymorphic over leading batch dimensions, vmaps over envs
(`torch.func.vmap(encode_observation, in_dims=(0, None))`) and compiles with fullgraph=True.
"""

import math
from collections.abc import Sequence
from typing import Literal

import attrs
import torch
from torch import Tensor

from esper.core.config import Rules
from esper.core.lifecycle import cooldown_left, param_counts
from esper.core.pytree import register_pytree, set_frozen_fields, tree_stack
from esper.core.seed import LifecycleState, SlotState
from esper.core.signals import TrackerState
from esper.core.stages import HAS_MODULE, LIVE, Stage

Kind = Literal["scalar", "binary", "stage", "blueprint"]


@attrs.frozen
class Feature:
    """One row of the feature table. `offset` is the index in the run block, or the offset inside a
    slot block; `width` is 1, 7 (stage one-hot) or 0 = K (blueprint one-hot, always last)."""

    name: str
    block: Literal["run", "slot"]
    offset: int
    kind: Kind = "scalar"
    scale: float = 1.0
    lo: float = 0.0
    hi: float = 1.0
    default: float = 0.0
    width: int = 1

    @property
    def binary(self) -> bool:
        return self.kind != "scalar"


STAGE_NAMES = ("DORMANT", "GERMINATED", "TRAINING", "BLENDING", "PROBATIONARY", "FOSSILIZED", "COOLDOWN")
STAGE_CODE: dict[Stage, int] = {
    Stage.DORMANT: 0, Stage.GERMINATED: 1, Stage.TRAINING: 2, Stage.BLENDING: 3, Stage.PROBATIONARY: 4,
    Stage.FOSSILIZED: 5, Stage.CULLED: 6, Stage.EMBARGOED: 6, Stage.RESETTING: 6,
}
TEMPO_SCALE = 8.0  # the longest ramp of tempo_choices (3 / 5 / 8 epochs)


def _table(block: Literal["run", "slot"], rows: Sequence[tuple[str, dict]]) -> tuple[Feature, ...]:
    out, offset = [], 0
    for name, spec in rows:
        out.append(Feature(name=name, block=block, offset=offset, **spec))
        offset += spec.get("width", 1)
    return tuple(out)


_DELTA = {"lo": -1.0, "hi": 1.0}
RUN_FEATURES: tuple[Feature, ...] = _table("run", [
    ("epoch_frac", {}),
    ("train_loss", {"hi": 3.0, "default": 1.0}),
    ("val_loss", {"hi": 3.0, "default": 1.0}),
    ("val_loss_delta", _DELTA),
    ("train_acc", {}),
    ("val_acc", {}),
    ("val_acc_delta", {"scale": 10.0, **_DELTA}),
    ("best_val_acc", {}),
    ("plateau", {"scale": 0.1}),
    ("growth", {"hi": 3.0}),
    ("live_frac", {}),
    ("fossil_frac", {}),
    ("budget_left", {"default": 1.0}),
    ("rolled_back_now", {"kind": "binary"}),
    ("rollback_frac", {}),
])
SLOT_FEATURES: tuple[Feature, ...] = _table("slot", [
    ("enabled", {"kind": "binary"}),
    ("stage", {"kind": "stage", "width": len(STAGE_NAMES)}),
    ("alpha", {}),
    ("epochs_in_stage", {"scale": 0.1, "hi": 3.0}),
    ("seed_age", {}),
    ("contribution", {"scale": 10.0, **_DELTA}),
    ("contribution_measured", {"kind": "binary"}),
    ("stage_gain", {"scale": 10.0, **_DELTA}),
    ("grad_ratio", {"hi": 2.0}),
    ("param_share", {"hi": 3.0}),
    ("tempo", {"scale": 1.0 / TEMPO_SCALE}),
    ("cooldown_left", {}),
    ("blueprint", {"kind": "blueprint", "width": 0}),
])
FEATURES: tuple[Feature, ...] = RUN_FEATURES + SLOT_FEATURES
# The per-slot rows that read one raw column each (everything but the two one-hots), in table order.
SLOT_SCALARS: tuple[Feature, ...] = tuple(f for f in SLOT_FEATURES if f.kind in ("scalar", "binary"))
RUN_DIM = len(RUN_FEATURES)
SLOT_FIXED = SLOT_FEATURES[-1].offset
assert (RUN_DIM, SLOT_FIXED) == (15, 18) and SLOT_FEATURES[-1].kind == "blueprint"  # docs/rl.md §2's layout


def obs_dim(n_slots: int, n_blueprints: int) -> int:
    """D(S, K) = 15 + S·(18 + K)."""
    return RUN_DIM + n_slots * (SLOT_FIXED + n_blueprints)


def slot_offset(slot: int, n_blueprints: int) -> int:
    """Index of slot `slot`'s block (its `enabled` entry)."""
    return RUN_DIM + slot * (SLOT_FIXED + n_blueprints)


def _width(f: Feature, n_blueprints: int) -> int:
    return n_blueprints if f.kind == "blueprint" else f.width


def _expanded(n_slots: int, n_blueprints: int) -> list[tuple[str, Feature]]:
    """(entry name, row) for every entry of the observation, in order."""
    out = [(f.name, f) for f in RUN_FEATURES]
    for s in range(n_slots):
        for f in SLOT_FEATURES:
            if f.kind == "stage":
                out += [(f"slot{s}.stage.{n}", f) for n in STAGE_NAMES]
            elif f.kind == "blueprint":
                out += [(f"slot{s}.blueprint.{k}", f) for k in range(n_blueprints)]
            else:
                out.append((f"slot{s}.{f.name}", f))
    return out


def feature_names(n_slots: int, n_blueprints: int) -> tuple[str, ...]:
    """Entry names for telemetry and tests: `val_acc`, `slot1.alpha`, `slot0.stage.BLENDING`, `slot2.blueprint.3`."""
    return tuple(name for name, _ in _expanded(n_slots, n_blueprints))


def obs_binary(n_slots: int, n_blueprints: int) -> Tensor:
    """Bool[D]: the binary entries (flags and one-hots), which bypass the running normaliser."""
    return torch.tensor([f.binary for _, f in _expanded(n_slots, n_blueprints)], dtype=torch.bool)


def obs_bounds(n_slots: int, n_blueprints: int) -> tuple[Tensor, Tensor]:
    """(lo[D], hi[D]) float32: the clamp of every entry ([0, 1] for binary entries)."""
    rows = [f for _, f in _expanded(n_slots, n_blueprints)]
    lo = [0.0 if f.binary else f.lo for f in rows]
    hi = [1.0 if f.binary else f.hi for f in rows]
    return torch.tensor(lo), torch.tensor(hi)


# --- packing: plain Python -> tensors ---------------------------------------------------------


@attrs.frozen(kw_only=True)
class ObsContext:
    """What the shell knows and the view does not (plain Python values of this step).

    Read from the view instead: val_acc (`view.val_acc`), seed params (`seed.n_params`), the
    accuracy at stage entry (`seed.acc_at_stage_start`), contribution, grad ratio and tempo.
    """

    epochs: int  # E
    random_guess_loss: float  # L0: ln C or ln V
    train_loss: float
    train_acc: float
    val_loss: float
    prev_val_loss: float | None = None  # None at t = 0
    prev_val_acc: float | None = None  # None at t = 0
    rolled_back_now: bool = False
    rollbacks: int = 0  # governor rollbacks so far this episode
    max_rollbacks: int  # the governor's limit (docs/runtime.md's config; no second default here)
    host_params: int

    def __attrs_post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"observation context: epochs must be >= 1, got {self.epochs}")
        if min(self.rollbacks, self.max_rollbacks, self.host_params) < 0:
            raise ValueError("observation context: rollbacks, max_rollbacks and host_params must be >= 0")




@register_pytree
@attrs.frozen(kw_only=True, init=False)
class ObsInputs:
    """Raw packed values of one env (or a stack, with leading batch dimensions). NaN = undefined.

    run[..., 15] and slot[..., S, 11] hold raw values in RUN_FEATURES / SLOT_SCALARS order;
    stage[..., S] the stage code (0…6); blueprint[..., S] the germinable index, −1 = none.
    """

    run: Tensor
    slot: Tensor
    stage: Tensor
    blueprint: Tensor

    def __init__(self, **values: Tensor) -> None:
        set_frozen_fields(self, values)




_F32_MAX = float(torch.finfo(torch.float32).max)


def _f32(value: float | None) -> float:
    """None or non-finite → NaN (encode applies the row default); huge → the float32 range (then the clamp)."""
    if value is None or not math.isfinite(value):
        return math.nan
    return min(max(float(value), -_F32_MAX), _F32_MAX)


def _ratio(num: float | None, den: float | None) -> float | None:
    """num/den, None when either is missing or non-finite or den is 0 (the row default applies)."""
    if num is None or den is None or not (math.isfinite(num) and math.isfinite(den)) or den == 0:
        return None
    return num / den


def _log_share(params: int, host: int) -> float | None:
    share = _ratio(float(params), float(host))
    return None if share is None or share < 0 else math.log1p(share)


def _run_values(view: LifecycleState, tracker: TrackerState, ctx: ObsContext, rules: Rules) -> list[float | None]:
    n_slots = len(view.slots)
    counts = param_counts(view, ctx.host_params)
    max_seeds = rules.config.max_seeds
    acc = view.val_acc
    loss_delta = None if ctx.prev_val_loss is None else _ratio(ctx.prev_val_loss - ctx.val_loss,
                                                                ctx.random_guess_loss)
    values = {
        "epoch_frac": view.epoch / ctx.epochs,
        "train_loss": _ratio(ctx.train_loss, ctx.random_guess_loss),
        "val_loss": _ratio(ctx.val_loss, ctx.random_guess_loss),
        "val_loss_delta": loss_delta,
        "train_acc": ctx.train_acc,
        "val_acc": acc,
        "val_acc_delta": None if ctx.prev_val_acc is None else acc - ctx.prev_val_acc,
        "best_val_acc": tracker.best_val_acc,
        "plateau": tracker.plateau_epochs,
        "growth": _log_share(counts.live + counts.fossilized, ctx.host_params),
        "live_frac": sum(s.stage in LIVE for s in view.slots) / n_slots,
        "fossil_frac": sum(s.stage == Stage.FOSSILIZED for s in view.slots) / n_slots,
        "budget_left": 1.0 if max_seeds == 0 else (max_seeds - view.germinations) / max_seeds,
        "rolled_back_now": float(ctx.rolled_back_now),
        "rollback_frac": _ratio(ctx.rollbacks, ctx.max_rollbacks),
    }
    return [values[f.name] for f in RUN_FEATURES]


def _slot_values(slot: SlotState, view: LifecycleState, ctx: ObsContext,
                 rules: Rules) -> tuple[list[float | None], int, int]:
    """(raw SLOT_SCALARS values, stage code, blueprint index) of one slot."""
    seed = slot.seed
    if not slot.enabled or seed is None:
        return [float(slot.enabled)] + [0.0] * (len(SLOT_SCALARS) - 1), 0, -1
    cfg = rules.config
    values = {
        "enabled": 1.0,
        "alpha": seed.alpha,
        "epochs_in_stage": seed.epochs_in_stage,
        "seed_age": seed.age / ctx.epochs,
        "contribution": seed.contribution,
        "contribution_measured": float(seed.contribution is not None),
        "stage_gain": view.val_acc - seed.acc_at_stage_start,
        "grad_ratio": seed.grad_ratio,
        "param_share": _log_share(seed.n_params, ctx.host_params) if seed.stage in HAS_MODULE else 0.0,
        "tempo": seed.tempo,
        "cooldown_left": cooldown_left(seed, cfg) / cfg.cooldown_records,
    }
    blueprint = rules.catalogue.germinable_index(seed.blueprint)
    return [values[f.name] for f in SLOT_SCALARS], STAGE_CODE[seed.stage], blueprint


def pack_observation(view: LifecycleState, tracker: TrackerState, ctx: ObsContext, rules: Rules) -> ObsInputs:
    """Plain Python → the float32 `ObsInputs` of one env (CPU tensors; the caller places them)."""
    if view.topology != rules.catalogue.topology:
        raise ValueError(f"observation: view is {view.topology}, rules are for {rules.catalogue.topology}")
    rows = [_slot_values(s, view, ctx, rules) for s in view.slots]
    f32 = torch.float32
    return ObsInputs(
        run=torch.tensor([_f32(v) for v in _run_values(view, tracker, ctx, rules)], dtype=f32),
        slot=torch.tensor([[_f32(v) for v in values] for values, _, _ in rows], dtype=f32),
        stage=torch.tensor([float(code) for _, code, _ in rows], dtype=f32),
        blueprint=torch.tensor([float(bp) for _, _, bp in rows], dtype=f32),
    )


def stack_inputs(inputs: Sequence[ObsInputs]) -> ObsInputs:
    """Stack per-env inputs (same S) along a new leading env axis, for vmap or a batched encode."""
    return tree_stack(inputs)


# --- encoding: tensors -> observation ---------------------------------------------------------


def _column(rows: Sequence[Feature], attr: str, like: Tensor) -> Tensor:
    return torch.tensor([float(getattr(f, attr)) for f in rows], dtype=like.dtype, device=like.device)


def safe(x: Tensor, default: Tensor | float) -> Tensor:
    """docs/rl.md §2's safe(v, default): non-finite entries (NaN = undefined, ±Inf) → default."""
    return torch.where(torch.isfinite(x), x, default)


def _scaled(raw: Tensor, rows: Sequence[Feature]) -> Tensor:
    """The table's safe → scale → clamp (or threshold for binary rows) over the last axis of `raw`."""
    v = safe(raw, _column(rows, "default", raw)) * _column(rows, "scale", raw)
    # clamp after scaling: a huge finite raw value scales to ±inf, which the clamp maps to its bound.
    clamped = torch.clamp(v, _column(rows, "lo", raw), _column(rows, "hi", raw))
    binary = torch.tensor([f.binary for f in rows], device=raw.device)
    return torch.where(binary, (v > 0.5).to(raw.dtype), clamped)


def _one_hot(codes: Tensor, n: int) -> Tensor:
    # Comparison, not F.one_hot: float codes, −1 (none) and garbage all give a valid 0/1 row.
    return (codes.unsqueeze(-1) == torch.arange(n, dtype=codes.dtype, device=codes.device)).to(codes.dtype)


def encode_observation(inputs: ObsInputs, n_blueprints: int) -> Tensor:
    """The observation [..., D(S, K)] of packed inputs; every entry inside its row's clamp."""
    run = _scaled(inputs.run, RUN_FEATURES)
    cols = _scaled(inputs.slot, SLOT_SCALARS)
    pieces, j = [], 0
    for f in SLOT_FEATURES:
        if f.kind == "stage":
            pieces.append(_one_hot(inputs.stage, f.width))
        elif f.kind == "blueprint":
            pieces.append(_one_hot(inputs.blueprint, n_blueprints))
        else:
            pieces.append(cols[..., j:j + 1])
            j += 1
    block = torch.cat(pieces, dim=-1)
    enabled = cols[..., :1] > 0.5  # SLOT_SCALARS[0] is `enabled`
    block = torch.where(enabled, block, torch.zeros_like(block))
    return torch.cat([run, block.flatten(-2)], dim=-1)
