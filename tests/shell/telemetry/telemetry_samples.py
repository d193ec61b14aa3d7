"""Test helpers: one sample of every event kind, and recording backends (imported by the tests)."""

import threading
import time

from esper.core import diag_events as dg
from esper.core import events as ev
from esper.core.actions import FactoredAction
from esper.core.gates import Check
from esper.core.stages import Stage
from esper.shell.telemetry.hub import Record


def slots() -> tuple[ev.SlotStatus, ...]:
    return (
        ev.SlotStatus(slot="early", stage=Stage.DORMANT),
        ev.SlotStatus(slot="mid", stage=Stage.FOSSILIZED, blueprint="norm", seed_id="mid#0", alpha=1.0,
                      contribution=0.004),
        ev.SlotStatus(slot="late", stage=Stage.BLENDING, blueprint="conv_light", seed_id="late#1",
                      alpha=0.6, contribution=0.012),
    )


def epoch_metrics(epoch: int = 12, **over: object) -> ev.EpochMetrics:
    values: dict[str, object] = dict(
        epoch=epoch, train_loss=1.234, train_acc=0.561, val_loss=1.301, val_acc=0.54, params=15698,
        seed_params=9280, lr_host=0.01, action="WAIT", reason="awaiting_gate", epoch_s=3.1,
        samples_per_s=2580.5, live_seeds=1, fossilized=1, recompiles=2, slots=slots(),
        host_rss_mb=812.5, host_peak_rss_mb=901.25, cuda_peak_allocated_mb=3071.5, cuda_peak_reserved_mb=4096.0,
    )
    values.update(over)
    return ev.EpochMetrics(**values)  # type: ignore[arg-type]


def sample_events() -> list[ev.Event]:
    """One value per registered kind, with floats of ≤ 7 significant digits (exact on the wire); tests index
    into it (0: seed.germinated, 9: run.end, 12: seed.metrics, 23: ppo.update), so the order is fixed."""
    return [*_lifecycle_events(), *_run_events(), *_epoch_events(), *_rl_events(), *_diag_events()]


def _lifecycle_events() -> list[ev.Event]:
    """The pure lifecycle's events."""
    checks = (Check("epochs_in_stage", 3, 3, True, "too_young"),
              Check("stage", Stage.TRAINING, Stage.TRAINING, True, "wrong_stage"),
              Check("shadow_gain", None, 0.005, False, "missing:shadow_gain"))
    return [
        ev.SeedGerminated(slot="late", seed_id="late#1", blueprint="conv_light", tempo=5, curve="COSINE",
                          n_params=9280, epoch=5),
        ev.StageChanged(slot="late", seed_id="late#1", from_stage=Stage.TRAINING, to_stage=Stage.BLENDING,
                        reason="g2", epoch=9, previous_epochs_in_stage=3),
        ev.GateEvaluated(slot="late", seed_id="late#1", gate="G2", passed=False,
                         reason="missing:shadow_gain", checks=checks),
        ev.SeedFossilized(slot="late", seed_id="late#1", contribution=0.0123, n_params=9280, age=15,
                          epoch=20),
        ev.SeedCulled(slot="mid", seed_id="mid#2", reason="negative_contribution",
                      stage=Stage.PROBATIONARY, age=9, contribution=-0.004, epoch=21),
        ev.SeedRetired(slot="mid", seed_id="mid#2", history=((Stage.GERMINATED, 12), (Stage.CULLED, 21)),
                       cull_reason="negative_contribution"),
        ev.ActionRejected(action=FactoredAction.germinate(1, 2, 0), reason="slot_occupied"),
    ]


def _run_events() -> list[ev.Event]:
    """A run's start, resume and end."""
    return [
        ev.RunStarted(task="synth-images", controller="heuristic", seed=0, epochs=40, device="cpu",
                      precision="fp32", host_params=6418, flops_per_sample=1.25e6,
                      config={"train": {"epochs": 40}, "telemetry": {"level": "normal"}},
                      data_source={"preset": "synth-images", "kind": "procedural", "n_train": 8000},
                      versions={"esper": "0.1.0", "torch": "2.5"}),
        ev.RunResumed(checkpoint="runs/x/checkpoints/epoch-0010.pt", from_epoch=10, from_seq=412),
        ev.RunEnded(status="ok", epochs=40, final_val_acc=0.613, final_val_loss=1.05, best_val_acc=0.62,
                    best_val_loss=1.01, best_epoch=38, params=15698, seed_params=9280, seeds_germinated=2,
                    seeds_fossilized=1, seeds_culled=1, rollbacks=0, wall_s=212.25, dropped=3,
                    run_dir="runs/x"),
    ]


def _epoch_events() -> list[ev.Event]:
    """Per-epoch values, the host signal, the governor, checkpoints and telemetry's own."""
    return [
        epoch_metrics(),
        epoch_metrics(13, val_ppl=3.5, rollback=True, episode=2, slots=()),
        ev.SeedMetrics(epoch=12, slot="late", seed_id="late#1", stage=Stage.BLENDING, alpha=0.6,
                       epochs_in_stage=2, age=7, grad_ratio=0.31, contribution=0.012, shadow_gain=None,
                       total_gain=0.02),
        ev.HostStabilised(epoch=4, val_loss=1.5, stable_count=3),
        ev.HostDestabilised(epoch=20, reason="structure_changed"),
        ev.InputMissing(epoch=6, slot="late", input="shadow_gain"),
        ev.GovernorAnomaly(epoch=16, loss=9.5, mean=1.2, std=0.1, threshold=3.6, consecutive=1),
        ev.GovernorRollback(epoch=17, reason="non_finite", loss=float("inf"), anomalies=2,
                            snapshot_epoch=16, culled=("late#1",), rollbacks=1, max_rollbacks=3,
                            lr_factor=0.5),
        ev.GovernorAbort(epoch=30, reason="divergence", rollbacks=3),
        ev.CheckpointSaved(path="runs/x/checkpoints/epoch-0010.pt", epoch=10, bytes=123456, seconds=0.25),
        ev.CheckpointLoaded(path="runs/x/checkpoints/epoch-0010.pt", epoch=10, update=None),
        ev.TelemetryDropped(total=12, since_last=5, per_backend={"tensorboard": 12}),
        ev.TelemetryWarning(source="telemetry", message="backend 'x' failed"),
    ]


def _rl_events() -> list[ev.Event]:
    """PPO's updates, rollouts and anomalies."""
    return [
        ev.PPOUpdate(update=3, episodes=24, env_steps=600, lr=0.0003, entropy_coef=0.05, loss=0.125,
                     policy_loss=-0.02, value_loss=0.3, entropy=1.1, approx_kl=0.004, clip_frac=0.12,
                     explained_variance=0.4, grad_norm=0.9, early_stopped=False, wall_s=12.5,
                     heads={"op": {"clip_frac": 0.1, "entropy_norm": 0.8}}, extra={"obs_norm_count": 600}),
        ev.RLRunStarted(run_seed=0, task="synth-images", reward_mode="shaped", epochs=25, n_envs=8, n_slots=3,
                        n_blueprints=6, obs_dim=87, updates=50, config_hash="abc123", resumed_from=None),
        ev.RolloutDone(batch=2, final_acc=(0.5, 0.25), raw_return=(1.5, -0.25), kept_steps=(25, 12),
                       truncated=(None, "governor_exhausted"), rollbacks=(0, 4), germinations=(2, 1),
                       fossilizations=(1, 0), culls=(0, 1), op_counts={"WAIT": 30, "GERMINATE": 3},
                       blueprint_counts={"conv_light": 2}, reward_components={"pbrs": 0.25}, seed_param_share=0.5,
                       wall_s=12.5, train_flops=(1_200_000_000, 640_000_000)),
        ev.RLRunEnded(status="interrupted", updates=3, episodes=24, env_steps=600, final_return=1.25,
                      final_acc=0.5, wall_s=30.5, run_dir="runs/ppo"),
        ev.EnvTruncated(env_index=1, step=12, reason="governor_exhausted", rank=1),
        ev.RLAnomaly(check="ratio_explosion", value=6.5, threshold=5.0, update=4, head="op", streak=2),
    ]


def _diag_events() -> list[ev.Event]:
    """Diagnostics."""
    return [
        dg.DiagGradients(epoch=7, groups={"host": 0.012, "seed:late": 0.03}, layers={"conv0": 0.5}),
        dg.DiagSharpness(epoch=7, sharpness=0.0321, directions=2, seconds=0.4),
        dg.DiagPerClass(epoch=7, accuracy=(0.5, 0.25, 0.75)),
        dg.DiagConfusion(epoch=7, matrix=((5, 1), (2, 7))),
        dg.DiagSkipped(epoch=8, name="diag.sharpness", expected_s=0.4, budget_s=0.1),
        dg.DiagWeights(epoch=7, layers={"host.blocks.0.conv": 1.5, "seed:late.conv": 0.25}),
        dg.DiagActivations(epoch=7, slots=(dg.SlotActivation(slot="late", host_mean=0.125, host_std=1.5,
                                                             host_rms=1.5, delta_rms=0.75, alpha=0.6, ratio=0.5),)),
        dg.DiagIsolation(epoch=7, batches=32, violations={"late": 0}),
    ]


class RecordingBackend:
    """Keeps every record; optionally blocks in `handle` until `release()` or fails on the n-th."""

    def __init__(self, name: str = "recording", *, blocked: bool = False, fail_at: int | None = None,
                 sleep_s: float = 0.0) -> None:
        self.name = name
        self.records: list[Record] = []
        self.calls = 0
        self.flushes = 0
        self.closed = False
        self._gate = threading.Event()
        if not blocked:
            self._gate.set()
        self._fail_at = fail_at
        self._sleep_s = sleep_s

    def release(self) -> None:
        self._gate.set()

    def handle(self, record: Record) -> None:
        self.calls += 1
        if self._fail_at is not None and self.calls >= self._fail_at:
            raise OSError(28, "No space left on device")
        self._gate.wait()
        if self._sleep_s:
            time.sleep(self._sleep_s)
        self.records.append(record)

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True

    @property
    def kinds(self) -> list[str]:
        return [r.kind for r in self.records]
