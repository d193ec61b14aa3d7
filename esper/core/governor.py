"""The governor's detection rules (docs/runtime.md §3.1): pure, over Python floats.

`check(state, train_loss, val_loss, cfg)` applies, in order:

1. `train_loss` or `val_loss` is NaN/±Inf → PANIC `non_finite`.
2. Fewer than `warmup` accepted losses → append `val_loss`, OK.
3. μ = window mean, RG = the task's random-guess loss: `μ < rg_learned_fraction·RG` (0.6) and
   `|val_loss − RG| < rg_tolerance·RG` (0.065) → PANIC `random_guess` (the model had learned
   and is now back to guessing).
4. μ, σ = population statistics of the window. Anomaly iff `val_loss > μ + sigma_k·σ` (6)
   **and** `val_loss > mean_multiplier·μ` (3); an anomalous loss is not appended;
   `consecutive += 1`; `consecutive ≥ cfg.consecutive` (3) → PANIC `divergence`, else
   ANOMALY(consecutive).
5. Otherwise append (the window keeps the last `window` accepted losses), `consecutive = 0`, OK.

PANIC verdicts leave the window alone. The shell then rolls back (or aborts when
`rollbacks_exhausted`) and calls `record_rollback`, which counts the rollback and resets
`consecutive` (the `governor.rollback` event carries the count from before that reset).
"""

import math
from enum import StrEnum
from typing import Any

import attrs

from esper.core.errors import ConfigError
from esper.core.events import GovernorAnomaly

PANIC_REASONS = ("non_finite", "random_guess", "divergence")


@attrs.frozen(kw_only=True)
class GovernorConfig:
    """Detection thresholds. `random_guess_loss` comes from the task: ln(classes) or ln(vocab)."""

    random_guess_loss: float
    window: int = 20
    warmup: int = 5
    sigma_k: float = 6.0
    mean_multiplier: float = 3.0
    consecutive: int = 3
    rg_tolerance: float = 0.065
    rg_learned_fraction: float = 0.6
    max_rollbacks: int = 3
    lr_factor_on_rollback: float = 0.5

    def __attrs_post_init__(self) -> None:
        rules = [
            (math.isfinite(self.random_guess_loss) and self.random_guess_loss > 0.0,
             f"random_guess_loss must be finite and > 0, got {self.random_guess_loss}"),
            # Rules 3–4 need a mean, so at least one accepted loss before they run.
            (self.warmup >= 1, f"warmup must be >= 1, got {self.warmup}"),
            # A window shorter than the warm-up would never leave the warm-up.
            (self.window >= self.warmup, f"window ({self.window}) must be >= warmup ({self.warmup})"),
            (self.sigma_k >= 0.0, f"sigma_k must be >= 0, got {self.sigma_k}"),
            (self.mean_multiplier >= 0.0, f"mean_multiplier must be >= 0, got {self.mean_multiplier}"),
            (self.consecutive >= 1, f"consecutive must be >= 1, got {self.consecutive}"),
            (self.rg_tolerance >= 0.0, f"rg_tolerance must be >= 0, got {self.rg_tolerance}"),
            (self.rg_learned_fraction >= 0.0,
             f"rg_learned_fraction must be >= 0, got {self.rg_learned_fraction}"),
            (self.max_rollbacks >= 0, f"max_rollbacks must be >= 0, got {self.max_rollbacks}"),
            (0.0 < self.lr_factor_on_rollback <= 1.0,
             f"lr_factor_on_rollback must be in (0, 1], got {self.lr_factor_on_rollback}"),
        ]
        for ok, message in rules:
            if not ok:
                raise ConfigError(f"governor config: {message}")

    @classmethod
    def for_classes(cls, n: int, **overrides: Any) -> "GovernorConfig":
        """Config for a task of `n` classes or vocabulary entries: RG = ln(n)."""
        if n < 2:
            raise ConfigError(f"governor config: need >= 2 classes for a random-guess loss, got {n}")
        return cls(random_guess_loss=math.log(n), **overrides)


@attrs.frozen(kw_only=True)
class GovernorState:
    """Accepted val losses (oldest first), the current anomaly run and the rollbacks so far."""

    window: tuple[float, ...] = attrs.field(default=(), converter=lambda w: tuple(float(x) for x in w))
    consecutive: int = 0
    rollbacks: int = 0


class VerdictKind(StrEnum):
    OK = "ok"
    ANOMALY = "anomaly"
    PANIC = "panic"


@attrs.frozen(kw_only=True)
class Verdict:
    """OK | ANOMALY(k) | PANIC(reason). Window statistics ride along for the telemetry event."""

    kind: VerdictKind = attrs.field(converter=VerdictKind)
    consecutive: int = 0  # k for ANOMALY; the anomaly count for PANIC
    reason: str | None = None  # PANIC only: one of PANIC_REASONS
    mean: float | None = None
    std: float | None = None
    threshold: float | None = None  # the loss above which this epoch was anomalous

    @classmethod
    def ok(cls) -> "Verdict":
        return cls(kind=VerdictKind.OK)

    @property
    def is_ok(self) -> bool:
        return self.kind == VerdictKind.OK

    @property
    def is_anomaly(self) -> bool:
        return self.kind == VerdictKind.ANOMALY

    @property
    def is_panic(self) -> bool:
        return self.kind == VerdictKind.PANIC

    def anomaly_event(self, epoch: int, loss: float) -> GovernorAnomaly:
        """The `governor.anomaly` event for an ANOMALY (or divergence PANIC) verdict."""
        if self.mean is None or self.std is None or self.threshold is None:
            raise ValueError(f"verdict {self.kind} carries no window statistics")
        return GovernorAnomaly(epoch=epoch, loss=loss, mean=self.mean, std=self.std,
                               threshold=self.threshold, consecutive=self.consecutive)


def _stats(window: tuple[float, ...]) -> tuple[float, float]:
    """Population mean and standard deviation.

    Plain `sum` and `d * d` rather than `fsum` and `**`: absurdly large (finite) losses then
    overflow to inf, which the rules handle, instead of raising `OverflowError`.
    """
    n = len(window)
    mean = sum(window) / n
    return mean, math.sqrt(sum((x - mean) * (x - mean) for x in window) / n)


def _accept(state: GovernorState, val_loss: float, cfg: GovernorConfig) -> GovernorState:
    return attrs.evolve(state, window=(*state.window, val_loss)[-cfg.window:], consecutive=0)


def check(state: GovernorState, train_loss: float, val_loss: float,
          cfg: GovernorConfig) -> tuple[GovernorState, Verdict]:
    """One epoch's verdict (rules 1–5 of the module docstring) and the state after it."""
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        return state, Verdict(kind=VerdictKind.PANIC, reason="non_finite", consecutive=state.consecutive)
    if len(state.window) < cfg.warmup:
        # Warm-up: too few losses for statistics; the rules below would fire on noise.
        return attrs.evolve(state, window=(*state.window, val_loss)[-cfg.window:]), Verdict.ok()
    mean, std = _stats(state.window)
    rg = cfg.random_guess_loss
    if mean < cfg.rg_learned_fraction * rg and abs(val_loss - rg) < cfg.rg_tolerance * rg:
        return state, Verdict(kind=VerdictKind.PANIC, reason="random_guess", consecutive=state.consecutive,
                              mean=mean, std=std)
    threshold = max(mean + cfg.sigma_k * std, cfg.mean_multiplier * mean)
    if val_loss > mean + cfg.sigma_k * std and val_loss > cfg.mean_multiplier * mean:
        # Not appended: an anomalous loss must not widen the window it is judged against.
        k = state.consecutive + 1
        kind = VerdictKind.PANIC if k >= cfg.consecutive else VerdictKind.ANOMALY
        reason = "divergence" if kind == VerdictKind.PANIC else None
        verdict = Verdict(kind=kind, consecutive=k, reason=reason, mean=mean, std=std, threshold=threshold)
        return attrs.evolve(state, consecutive=k), verdict
    return _accept(state, val_loss, cfg), Verdict.ok()


def rollbacks_exhausted(state: GovernorState, cfg: GovernorConfig) -> bool:
    """True when a PANIC now must abort the run: `max_rollbacks` rollbacks were already spent."""
    return state.rollbacks >= cfg.max_rollbacks


def record_rollback(state: GovernorState) -> GovernorState:
    """Count a rollback and reset the anomaly run. The window of accepted losses is kept: every
    loss in it was accepted at or before the snapshot the model returns to."""
    return attrs.evolve(state, rollbacks=state.rollbacks + 1, consecutive=0)


def lr_scale(state: GovernorState, cfg: GovernorConfig) -> float:
    """The cumulative learning-rate factor after `state.rollbacks` rollbacks (0.5 each)."""
    return cfg.lr_factor_on_rollback ** state.rollbacks
