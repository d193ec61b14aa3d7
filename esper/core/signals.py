"""The signal tracker (docs/runtime.md §1.2): a pure fold over epoch metrics that tells the heuristic
whether the host has stabilised and how long its accuracy has been on a plateau.

Per epoch, in order (`update`):

1. `rel = (prev_loss − val_loss) / max(prev_loss, 1e-8)`; undefined on the first epoch and
   after a structure change.
2. `rel_ema = (1 − w)·rel_ema + w·rel` with w = `stabilisation_ema` (0.5); the first defined
   `rel` initialises it.
3. Stable epoch: `rel_ema < stabilisation_rel` (0.03) and `val_loss < spike_factor·prev_loss`
   (1.5) → `stable_count += 1`, else `stable_count = 0`.
4. Not latched and `stable_count ≥ stabilisation_epochs` (3) → latch, emit `HostStabilised`
   (earliest at epoch 4: epoch 1 has no `rel`).
5. Latched and `rel_ema ≥ unlatch_rel` (0.06) → unlatch, `stable_count = 0`, emit
   `HostDestabilised(reason="learning_resumed")`.
6. Plateau against a reference point: `ref_acc` unset → `ref_acc = val_acc`,
   `plateau_epochs = 0`; `val_acc ≥ ref_acc + plateau_min_gain` → `ref_acc = val_acc`,
   `plateau_epochs = 0`; else `plateau_epochs += 1`.
7. `best_val_acc = max`, `best_val_loss = min` (all-time); append to the histories (last
   `history_window` values kept); `prev_loss = val_loss`.

`structure_changed` (after a fossilization or a governor rollback) clears the latch,
`stable_count`, `rel_ema`, `prev_loss`, `ref_acc` and `plateau_epochs` and emits
`HostDestabilised(reason="structure_changed")`: a changed network must stabilise again.
"""

import math
from typing import Any

import attrs

from esper.core.errors import ConfigError
from esper.core.events import Event, HostDestabilised, HostStabilised

# Plateau gain per task family (docs/runtime.md §5.1): image presets use the CNN hosts, LM presets
# the transformer hosts.
PLATEAU_MIN_GAIN = {"cnn": 0.005, "transformer": 0.002, "mlp": 0.005}  # mlp: flat-input classifiers
STRUCTURE_CHANGES = ("fossilized", "rollback")
_REL_FLOOR = 1e-8  # keeps `rel` finite when the previous loss is 0

Events = tuple[Event, ...]


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@attrs.frozen(kw_only=True)
class TrackerConfig:
    """The constants of docs/runtime.md §1.2. `plateau_min_gain` is per preset: 0.005 for image
    tasks, 0.002 for LM tasks (`TrackerConfig.for_topology`)."""

    history_window: int = 10
    plateau_min_gain: float = 0.005
    stabilisation_rel: float = 0.03
    stabilisation_ema: float = 0.5
    stabilisation_epochs: int = 3
    spike_factor: float = 1.5
    unlatch_rel: float = 0.06
    # "best" (esper's calibration): progress is measured against the best val loss so far, so a
    # spike counts as no progress and the recovery after it is not mistaken for learning; with
    # "previous" (docs/runtime.md §1.2 as written) one noisy epoch resets the count on synth-images.
    progress_reference: str = "best"

    def __attrs_post_init__(self) -> None:
        rules = [
            (self.history_window >= 1, f"history_window must be >= 1, got {self.history_window}"),
            (self.plateau_min_gain >= 0.0, f"plateau_min_gain must be >= 0, got {self.plateau_min_gain}"),
            (0.0 < self.stabilisation_ema <= 1.0,
             f"stabilisation_ema must be in (0, 1], got {self.stabilisation_ema}"),
            (self.stabilisation_epochs >= 1,
             f"stabilisation_epochs must be >= 1, got {self.stabilisation_epochs}"),
            (self.spike_factor > 1.0, f"spike_factor must be > 1, got {self.spike_factor}"),
            (self.progress_reference in ("best", "previous"),
             f"progress_reference must be 'best' or 'previous', got {self.progress_reference!r}"),
            # Hysteresis only works if unlatching needs more progress than latching forbids.
            (self.unlatch_rel >= self.stabilisation_rel,
             f"unlatch_rel ({self.unlatch_rel}) must be >= stabilisation_rel ({self.stabilisation_rel})"),
        ]
        for ok, message in rules:
            if not ok:
                raise ConfigError(f"tracker config: {message}")

    @classmethod
    def for_topology(cls, topology: str, **overrides: Any) -> "TrackerConfig":
        """Defaults with the plateau gain of the topology's task family (images / LM)."""
        if topology not in PLATEAU_MIN_GAIN:
            raise ConfigError(f"tracker config: unknown topology {topology!r}; expected one of "
                              f"{sorted(PLATEAU_MIN_GAIN)}")
        return cls(**{"plateau_min_gain": PLATEAU_MIN_GAIN[topology], **overrides})


@attrs.frozen(kw_only=True)
class EpochSignals:
    """What the tracker reads from one epoch (Python floats, fetched once by the shell)."""

    epoch: int
    val_loss: float
    val_acc: float
    train_loss: float
    train_acc: float


@attrs.frozen(kw_only=True)
class TrackerState:
    """The tracker after the epoch `epoch` (0 = nothing folded yet). None = unset."""

    epoch: int = 0
    prev_loss: float | None = None
    rel_ema: float | None = None
    stable_count: int = 0
    latched: bool = False
    ref_acc: float | None = None
    plateau_epochs: int = 0
    best_val_acc: float | None = None
    best_val_loss: float | None = None
    loss_history: tuple[float, ...] = attrs.field(default=(), converter=_floats)
    acc_history: tuple[float, ...] = attrs.field(default=(), converter=_floats)


def update(tracker: TrackerState, metrics: EpochSignals,
           cfg: TrackerConfig) -> tuple[TrackerState, Events]:
    """Fold one epoch's metrics into the tracker (steps 1–7 of the module docstring)."""
    _check(tracker, metrics)
    val_loss, val_acc = float(metrics.val_loss), float(metrics.val_acc)
    prev = tracker.prev_loss
    if prev is not None and cfg.progress_reference == "best" and tracker.best_val_loss is not None:
        prev = tracker.best_val_loss
    # Steps 1–2: no `rel` without a previous loss, and then the EMA keeps its (cleared) value.
    rel = None if prev is None else (prev - val_loss) / max(prev, _REL_FLOOR)
    rel_ema = tracker.rel_ema
    if rel is not None:
        w = cfg.stabilisation_ema
        rel_ema = rel if rel_ema is None else (1.0 - w) * rel_ema + w * rel
    # Step 3: a spike (loss jumping by the spike factor) is never stable, whatever the EMA says.
    stable = (rel_ema is not None and prev is not None and rel_ema < cfg.stabilisation_rel
              and val_loss < cfg.spike_factor * prev)
    stable_count = tracker.stable_count + 1 if stable else 0
    latched, events = tracker.latched, []
    if not latched and stable_count >= cfg.stabilisation_epochs:  # step 4
        latched = True
        events.append(HostStabilised(epoch=metrics.epoch, val_loss=val_loss, stable_count=stable_count))
    elif latched and rel_ema is not None and rel_ema >= cfg.unlatch_rel:  # step 5
        latched, stable_count = False, 0
        events.append(HostDestabilised(epoch=metrics.epoch, reason="learning_resumed"))
    ref_acc, plateau = _plateau(tracker, val_acc, cfg)  # step 6
    window = cfg.history_window
    new = attrs.evolve(  # step 7
        tracker,
        epoch=metrics.epoch,
        prev_loss=val_loss,
        rel_ema=rel_ema,
        stable_count=stable_count,
        latched=latched,
        ref_acc=ref_acc,
        plateau_epochs=plateau,
        best_val_acc=val_acc if tracker.best_val_acc is None else max(tracker.best_val_acc, val_acc),
        best_val_loss=val_loss if tracker.best_val_loss is None else min(tracker.best_val_loss, val_loss),
        loss_history=(*tracker.loss_history, val_loss)[-window:],
        acc_history=(*tracker.acc_history, val_acc)[-window:],
    )
    return new, tuple(events)


def _check(tracker: TrackerState, metrics: EpochSignals) -> None:
    # The governor panics on non-finite losses before the tracker runs (docs/runtime.md §2.1 step 5),
    # so a NaN here is a caller bug that would silently poison the EMA and the best values.
    for name in ("val_loss", "val_acc"):
        if not math.isfinite(getattr(metrics, name)):
            raise ValueError(f"tracker: {name} must be finite, got {getattr(metrics, name)}")
    # Epochs may skip (a governor PANIC epoch is not folded) but never repeat or go back.
    if metrics.epoch <= tracker.epoch:
        raise ValueError(f"tracker: epoch {metrics.epoch} is not after the last folded epoch {tracker.epoch}")


def _plateau(tracker: TrackerState, val_acc: float, cfg: TrackerConfig) -> tuple[float, int]:
    # Measured against a reference point, so slow steady gains that are each below the
    # threshold still end the plateau once they add up to `plateau_min_gain`.
    if tracker.ref_acc is None or val_acc >= tracker.ref_acc + cfg.plateau_min_gain:
        return val_acc, 0
    return tracker.ref_acc, tracker.plateau_epochs + 1


def structure_changed(tracker: TrackerState, kind: str, *,
                      epoch: int | None = None) -> tuple[TrackerState, Events]:
    """Forget stability and plateau after the network changed (`kind`: "fossilized" | "rollback").

    Best values and histories are kept (they are all-time / informational). The event is
    stamped with `epoch`, default the last folded epoch; after a rollback the PANIC epoch was
    not folded, so the shell passes that epoch explicitly.
    """
    if kind not in STRUCTURE_CHANGES:
        raise ValueError(f"tracker: structure change must be one of {STRUCTURE_CHANGES}, got {kind!r}")
    cleared = attrs.evolve(tracker, latched=False, stable_count=0, rel_ema=None, prev_loss=None,
                           ref_acc=None, plateau_epochs=0)
    stamp = tracker.epoch if epoch is None else epoch
    return cleared, (HostDestabilised(epoch=stamp, reason="structure_changed"),)
