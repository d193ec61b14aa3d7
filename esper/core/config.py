"""Lifecycle timing and thresholds (docs/lifecycle.md §1.5), and `Rules`: everything the pure
lifecycle needs besides the state itself (config, blueprint catalogue, validation table).
"""

from collections.abc import Sequence

import attrs

from esper.core.alpha import Curve
from esper.core.catalogue import Catalogue, ValidationTable, catalogue_for
from esper.core.errors import ConfigError
from esper.core.seed import SlotSpec
from esper.core.stages import Stage

_INPUT_GRAD_STAGES = (Stage.BLENDING, Stage.PROBATIONARY, Stage.FOSSILIZED)


@attrs.frozen(kw_only=True)
class LifecycleConfig:
    """Every lifecycle constant. Build with `LifecycleConfig.for_horizon(H)` for a run of H epochs."""

    min_training_epochs: int = 3
    max_training_epochs: int = 6
    min_training_improvement: float = 0.005
    min_grad_ratio: float = 0.05
    grad_ratio_cap: float = 10.0
    tempo_choices: tuple[int, ...] = (3, 5, 8)
    default_tempo: int = 5
    blend_curve: Curve = attrs.field(default=Curve.SIGMOID, converter=Curve)
    sigmoid_steepness: float = 12.0
    min_blending_epochs: int = 3
    alpha_complete: float = 0.95
    min_probation_epochs: int = 1
    max_probation_epochs: int = 5
    min_fossilize_contribution: float = 0.01
    cull_dwell: int = 1
    embargo_dwell: int = 5
    reset_dwell: int = 1
    min_cull_age: int = 3
    max_seeds: int = 0
    max_seed_params: int = 0
    alpha_granularity: str = "epoch"
    input_grad_from: Stage = attrs.field(default=Stage.FOSSILIZED, converter=Stage)
    # seed lr × this scale in TRAINING, BLENDING, PROBATIONARY (docs/runtime.md §2.2's stage_lr_scale).
    # TRAINING is 0.1 (esper's calibration): the straight-through objective <g, δ> is linear, so at
    # the full seed lr δ overshoots and no seed passed G2's shadow-gain check on synth-images.
    stage_lr_scale: tuple[float, float, float] = attrs.field(default=(0.1, 1.0, 1.0), converter=tuple)
    strict: bool = True

    def __attrs_post_init__(self) -> None:
        for message in _violations(self):
            raise ConfigError(f"lifecycle config: {message}")

    @classmethod
    def for_horizon(cls, horizon: int, **overrides: object) -> "LifecycleConfig":
        """Timeouts scaled to the real horizon H (epochs of the run or episode)."""
        if horizon < 1:
            raise ConfigError(f"lifecycle config: horizon must be >= 1, got {horizon}")
        defaults = {
            "max_training_epochs": max(6, horizon // 10),
            "max_probation_epochs": max(5, horizon // 10),
        }
        return cls(**{**defaults, **overrides})

    @property
    def cooldown_records(self) -> int:
        """Records from a cull until the slot is DORMANT again (1 + 5 + 1 by default)."""
        return self.cull_dwell + self.embargo_dwell + self.reset_dwell


def _violations(c: LifecycleConfig) -> list[str]:
    """Every broken constraint, as a readable sentence (the first one is raised)."""
    rules = [
        (c.min_training_epochs >= 1, f"min_training_epochs must be >= 1, got {c.min_training_epochs}"),
        (c.max_training_epochs >= c.min_training_epochs,
         f"max_training_epochs ({c.max_training_epochs}) must be >= min_training_epochs "
         f"({c.min_training_epochs})"),
        (c.min_grad_ratio >= 0.0, f"min_grad_ratio must be >= 0, got {c.min_grad_ratio}"),
        (c.grad_ratio_cap > c.min_grad_ratio,
         f"grad_ratio_cap ({c.grad_ratio_cap}) must exceed min_grad_ratio ({c.min_grad_ratio})"),
        (len(c.tempo_choices) >= 1 and all(isinstance(t, int) and t >= 1 for t in c.tempo_choices),
         f"tempo_choices must be positive integers, got {c.tempo_choices}"),
        (len(set(c.tempo_choices)) == len(c.tempo_choices),
         f"tempo_choices must be distinct, got {c.tempo_choices}"),
        (c.default_tempo in c.tempo_choices,
         f"default_tempo {c.default_tempo} is not one of tempo_choices {c.tempo_choices}"),
        (c.sigmoid_steepness > 0.0, f"sigmoid_steepness must be > 0, got {c.sigmoid_steepness}"),
        (c.min_blending_epochs >= 0, f"min_blending_epochs must be >= 0, got {c.min_blending_epochs}"),
        (0.0 < c.alpha_complete <= 1.0, f"alpha_complete must be in (0, 1], got {c.alpha_complete}"),
        (c.min_probation_epochs >= 0,
         f"min_probation_epochs must be >= 0, got {c.min_probation_epochs}"),
        (c.max_probation_epochs >= max(1, c.min_probation_epochs),
         f"max_probation_epochs ({c.max_probation_epochs}) must be >= 1 and >= "
         f"min_probation_epochs ({c.min_probation_epochs})"),
        (c.min_fossilize_contribution >= 0.0,
         f"min_fossilize_contribution must be >= 0, got {c.min_fossilize_contribution}"),
        (min(c.cull_dwell, c.embargo_dwell, c.reset_dwell) >= 1,
         f"cull/embargo/reset dwells must be >= 1, got "
         f"{c.cull_dwell}/{c.embargo_dwell}/{c.reset_dwell}"),
        (c.min_cull_age >= 0, f"min_cull_age must be >= 0, got {c.min_cull_age}"),
        (c.max_seeds >= 0, f"max_seeds must be >= 0 (0 = unlimited), got {c.max_seeds}"),
        (c.max_seed_params >= 0,
         f"max_seed_params must be >= 0 (0 = unlimited), got {c.max_seed_params}"),
        (c.alpha_granularity in ("epoch", "step"),
         f"alpha_granularity must be 'epoch' or 'step', got {c.alpha_granularity!r}"),
        (len(c.stage_lr_scale) == 3 and all(x > 0 for x in c.stage_lr_scale),
         f"stage_lr_scale must be three positive factors (TRAINING, BLENDING, PROBATIONARY), got {c.stage_lr_scale}"),
        (c.input_grad_from in _INPUT_GRAD_STAGES,
         f"input_grad_from must be one of {[s.name for s in _INPUT_GRAD_STAGES]}, "
         f"got {c.input_grad_from.name}"),
    ]
    return [message for ok, message in rules if not ok]


def min_span(config: LifecycleConfig, tempo: int) -> int:
    """Fewest boundaries from germination to the first boundary where FOSSILIZE is legal."""
    return config.min_training_epochs + max(tempo, config.min_blending_epochs) + max(
        1, config.min_probation_epochs
    )


@attrs.frozen
class Rules:
    """What the lifecycle functions need besides the state: timing, catalogue, validation."""

    config: LifecycleConfig
    catalogue: Catalogue
    validation: ValidationTable

    @classmethod
    def for_layout(
        cls,
        topology: str,
        slot_specs: Sequence[SlotSpec],
        *,
        horizon: int = 100,
        config: LifecycleConfig | None = None,
    ) -> "Rules":
        """Rules from the catalogue's formulas alone (no probing; the model builds a probed table)."""
        catalogue = catalogue_for(topology)
        return cls(
            config=config or LifecycleConfig.for_horizon(horizon),
            catalogue=catalogue,
            validation=ValidationTable.from_constraints(catalogue, [s.dim for s in slot_specs]),
        )
