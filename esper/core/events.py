"""Lifecycle events: frozen values the core returns and the shell turns into telemetry.

Each class has a stable wire name (`kind`); `esper.core.wire` puts them on the wire.
"""

from typing import Any, ClassVar

import attrs

from esper.core.stages import Stage


class Event:
    kind: ClassVar[str]


# How a run ended (run.end, summary.json; docs/runtime.md §4.6): `diverged` is a run that went its
# full length with final metrics that are not finite (the governor off, or its rollbacks never spent).
RUN_STATUSES = ("ok", "aborted", "interrupted", "diverged")


@attrs.frozen(kw_only=True)
class SeedGerminated(Event):
    kind: ClassVar[str] = "seed.germinated"
    slot: str
    seed_id: str
    blueprint: str
    tempo: int
    curve: str
    n_params: int
    epoch: int


@attrs.frozen(kw_only=True)
class StageChanged(Event):
    kind: ClassVar[str] = "seed.stage_changed"
    slot: str
    seed_id: str
    from_stage: Stage
    to_stage: Stage
    reason: str
    epoch: int
    previous_epochs_in_stage: int


@attrs.frozen(kw_only=True)
class GateEvaluated(Event):
    kind: ClassVar[str] = "seed.gate_evaluated"
    slot: str
    seed_id: str | None
    gate: str
    passed: bool
    reason: str | None
    checks: tuple[Any, ...]


@attrs.frozen(kw_only=True)
class SeedFossilized(Event):
    kind: ClassVar[str] = "seed.fossilized"
    slot: str
    seed_id: str
    contribution: float | None
    n_params: int
    age: int
    epoch: int


@attrs.frozen(kw_only=True)
class SeedCulled(Event):
    kind: ClassVar[str] = "seed.culled"
    slot: str
    seed_id: str
    reason: str
    stage: Stage
    age: int
    contribution: float | None
    epoch: int


@attrs.frozen(kw_only=True)
class SeedRetired(Event):
    kind: ClassVar[str] = "seed.retired"
    slot: str
    seed_id: str
    history: tuple[tuple[Stage, int], ...]
    cull_reason: str | None


@attrs.frozen(kw_only=True)
class ActionRejected(Event):
    kind: ClassVar[str] = "controller.action_rejected"
    action: Any
    reason: str


# --- telemetry vocabulary (docs/runtime.md §4.3) -----------------------------------------------------
# Wire names, levels, severities and the JSON codec live in `esper.core.wire`; these classes are
# only the values. Fields whose meaning is free-form JSON (a resolved config, a data source
# record, per-head statistics) are plain dicts so the schema can grow without a new class.


@attrs.frozen(kw_only=True)
class SlotStatus:
    """One slot as the epoch line and metrics.csv show it (not an event on its own)."""

    slot: str
    stage: Stage
    blueprint: str | None = None
    seed_id: str | None = None
    alpha: float = 0.0
    contribution: float | None = None


@attrs.frozen(kw_only=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run.start"
    task: str
    controller: str
    seed: int
    epochs: int
    device: str
    precision: str
    host_params: int
    flops_per_sample: float | None = None
    episodes: int | None = None
    config: dict[str, Any] = attrs.field(factory=dict)
    data_source: dict[str, Any] = attrs.field(factory=dict)
    versions: dict[str, Any] = attrs.field(factory=dict)
    data_path: str | None = None  # "resident" | "streamed" (docs/runtime.md §5.5); None: before it was recorded


@attrs.frozen(kw_only=True)
class RunResumed(Event):
    kind: ClassVar[str] = "run.resume"
    checkpoint: str
    from_epoch: int
    from_seq: int = 0


@attrs.frozen(kw_only=True)
class RunEnded(Event):
    kind: ClassVar[str] = "run.end"
    status: str = attrs.field(validator=attrs.validators.in_(RUN_STATUSES))
    epochs: int
    final_val_acc: float | None
    final_val_loss: float | None
    best_val_acc: float | None
    best_val_loss: float | None
    best_epoch: int | None
    params: int
    seed_params: int
    seeds_germinated: int
    seeds_fossilized: int
    seeds_culled: int
    rollbacks: int
    wall_s: float
    dropped: int = 0
    run_dir: str | None = None


@attrs.frozen(kw_only=True)
class EpochMetrics(Event):
    kind: ClassVar[str] = "epoch.metrics"
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    params: int
    seed_params: int
    lr_host: float
    action: str
    reason: str
    epoch_s: float
    samples_per_s: float
    episode: int = 0
    val_ppl: float | None = None
    live_seeds: int = 0
    fossilized: int = 0
    rollback: bool = False
    recompiles: int = 0
    slots: tuple[SlotStatus, ...] = ()
    # Memory (MiB, docs/runtime.md §4.3): host RSS now and the process's peak; the CUDA allocator's
    # peaks over the epoch. None where not measured (CUDA numbers off CUDA, current RSS without /proc).
    host_rss_mb: float | None = None
    host_peak_rss_mb: float | None = None
    cuda_peak_allocated_mb: float | None = None
    cuda_peak_reserved_mb: float | None = None


@attrs.frozen(kw_only=True)
class SeedMetrics(Event):
    kind: ClassVar[str] = "seed.metrics"
    epoch: int
    slot: str
    seed_id: str
    stage: Stage
    alpha: float
    epochs_in_stage: int
    age: int
    grad_ratio: float | None = None
    contribution: float | None = None
    shadow_gain: float | None = None
    total_gain: float | None = None


@attrs.frozen(kw_only=True)
class HostStabilised(Event):
    kind: ClassVar[str] = "host.stabilised"
    epoch: int
    val_loss: float
    stable_count: int


@attrs.frozen(kw_only=True)
class HostDestabilised(Event):
    kind: ClassVar[str] = "host.destabilised"
    epoch: int
    reason: str  # learning_resumed | structure_changed


@attrs.frozen(kw_only=True)
class InputMissing(Event):
    kind: ClassVar[str] = "controller.input_missing"
    epoch: int
    slot: str
    input: str


@attrs.frozen(kw_only=True)
class GovernorAnomaly(Event):
    kind: ClassVar[str] = "governor.anomaly"
    epoch: int
    loss: float
    mean: float
    std: float
    threshold: float
    consecutive: int


@attrs.frozen(kw_only=True)
class GovernorRollback(Event):
    kind: ClassVar[str] = "governor.rollback"
    epoch: int
    reason: str
    loss: float
    anomalies: int  # the anomaly count before the reset
    snapshot_epoch: int
    culled: tuple[str, ...]
    rollbacks: int  # k of max_rollbacks, this one included
    max_rollbacks: int
    lr_factor: float


@attrs.frozen(kw_only=True)
class GovernorAbort(Event):
    kind: ClassVar[str] = "governor.abort"
    epoch: int
    reason: str
    rollbacks: int


@attrs.frozen(kw_only=True)
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint.saved"
    path: str
    epoch: int | None
    update: int | None = None
    bytes: int
    seconds: float


@attrs.frozen(kw_only=True)
class CheckpointLoaded(Event):
    kind: ClassVar[str] = "checkpoint.loaded"
    path: str
    epoch: int | None
    update: int | None = None


@attrs.frozen(kw_only=True)
class TelemetryDropped(Event):
    kind: ClassVar[str] = "telemetry.dropped"
    total: int
    since_last: int
    per_backend: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class TelemetryWarning(Event):
    """A warning about the run's own machinery (a detached backend, a skipped write)."""

    kind: ClassVar[str] = "telemetry.warning"
    source: str
    message: str


@attrs.frozen(kw_only=True)
class PPOUpdate(Event):
    """One PPO update (docs/rl.md §9); the long tail of per-head statistics goes in `heads`/`extra`."""

    kind: ClassVar[str] = "ppo.update"
    update: int
    episodes: int
    env_steps: int
    lr: float
    entropy_coef: float
    loss: float
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_frac: float
    explained_variance: float
    grad_norm: float
    early_stopped: bool
    wall_s: float
    heads: dict[str, dict[str, float]] = attrs.field(factory=dict)
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class RLRunStarted(Event):
    """A PPO training run starts or resumes (docs/rl.md §9)."""

    kind: ClassVar[str] = "rl.run_started"
    run_seed: int
    task: str
    reward_mode: str
    epochs: int
    n_envs: int
    n_slots: int
    n_blueprints: int
    obs_dim: int
    updates: int
    config_hash: str
    resumed_from: str | None


@attrs.frozen(kw_only=True)
class RLRunEnded(Event):
    """A PPO training run ends, whatever its status (a growth run's is `run.end`; docs/rl.md §9)."""

    kind: ClassVar[str] = "rl.run_ended"
    status: str = attrs.field(validator=attrs.validators.in_(RUN_STATUSES))
    updates: int  # updates done
    episodes: int
    env_steps: int
    final_return: float | None  # the last update's mean return (None: no update done)
    final_acc: float | None  # the last update's mean final accuracy
    wall_s: float
    run_dir: str | None = None


@attrs.frozen(kw_only=True)
class RolloutDone(Event):
    """One rollout batch of N episodes; per-env lists are in env order."""

    kind: ClassVar[str] = "rl.rollout_done"
    batch: int
    final_acc: tuple[float, ...]
    raw_return: tuple[float, ...]
    kept_steps: tuple[int, ...]
    truncated: tuple[str | None, ...]
    rollbacks: tuple[int, ...]
    germinations: tuple[int, ...]
    fossilizations: tuple[int, ...]
    culls: tuple[int, ...]
    op_counts: dict[str, int]
    blueprint_counts: dict[str, int]
    reward_components: dict[str, float]
    seed_param_share: float
    wall_s: float
    # Each episode's training FLOPs (the env Trainer's FlopMeter total); empty in records that predate it.
    train_flops: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class EnvTruncated(Event):
    kind: ClassVar[str] = "rl.env_truncated"
    env_index: int
    step: int
    reason: str
    rank: int = 0  # the rank that ran the env (DD-PPO, docs/rl.md §12)


@attrs.frozen(kw_only=True)
class RLAnomaly(Event):
    kind: ClassVar[str] = "rl.anomaly"
    check: str
    value: float
    threshold: float
    update: int
    head: str | None
    streak: int
