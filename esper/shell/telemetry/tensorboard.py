"""TensorBoard backend (docs/runtime.md §4.6, extra `esper[tensorboard]`): scalars in `<run>/tb/`.

Epoch metrics, per-slot alpha and contribution, per-seed gate inputs, diagnostics and PPO
statistics become scalars; everything else stays in the JSONL. Importing this module without
the extra raises one ImportError that says how to install it.
"""

import os
from typing import Any

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError as exc:  # torch's module imports the `tensorboard` package itself
    raise ImportError(
        "TensorBoard logging needs the 'tensorboard' extra: pip install 'esper[tensorboard]' "
        "(or run without --tensorboard)"
    ) from exc

from esper.core import diag_events as dg
from esper.core import events as ev
from esper.shell.telemetry.hub import Record

EPOCH_SCALARS = {
    "train/loss": "train_loss", "train/acc": "train_acc", "val/loss": "val_loss", "val/acc": "val_acc",
    "val/ppl": "val_ppl", "params/total": "params", "params/seeds": "seed_params", "lr/host": "lr_host",
    "time/epoch_s": "epoch_s", "time/samples_per_s": "samples_per_s", "seeds/live": "live_seeds",
    "seeds/fossilized": "fossilized", "compile/recompiles": "recompiles",
    "memory/host_rss_mb": "host_rss_mb", "memory/host_peak_rss_mb": "host_peak_rss_mb",
    "memory/cuda_peak_allocated_mb": "cuda_peak_allocated_mb", "memory/cuda_peak_reserved_mb": "cuda_peak_reserved_mb",
}
SEED_SCALARS = ("alpha", "grad_ratio", "contribution", "shadow_gain", "total_gain")
PPO_SCALARS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac",
               "explained_variance", "grad_norm", "lr", "entropy_coef")


ACTIVATION_SCALARS = ("host_mean", "host_std", "host_rms", "delta_rms", "alpha", "ratio")


def diag_scalars(e: ev.Event) -> dict[str, Any]:
    """A diag event's scalars under `diag/…` (the confusion matrix and skips stay in the JSONL)."""
    if isinstance(e, dg.DiagGradients):
        return ({f"diag/grad_rms/{g}": v for g, v in e.groups.items()}
                | {f"diag/grad_layer/{layer}": v for layer, v in e.layers.items()})
    if isinstance(e, dg.DiagWeights):
        return {f"diag/weight_norm/{layer}": v for layer, v in e.layers.items()}
    if isinstance(e, dg.DiagSharpness):
        return {"diag/sharpness": e.sharpness}
    if isinstance(e, dg.DiagPerClass):
        return {f"diag/class_acc/{c}": v for c, v in enumerate(e.accuracy)}
    if isinstance(e, dg.DiagActivations):
        return {f"diag/activation/{s.slot}/{name}": getattr(s, name) for s in e.slots for name in ACTIVATION_SCALARS}
    if isinstance(e, dg.DiagIsolation):
        return {f"diag/isolation_violations/{slot}": n for slot, n in e.violations.items()}
    return {}


class TensorBoardBackend:
    name = "tensorboard"

    def __init__(self, log_dir: str | os.PathLike[str], *, epochs_per_episode: int | None = None) -> None:
        self.log_dir = str(log_dir)
        self._writer = SummaryWriter(log_dir=self.log_dir)
        # PPO runs many episodes of E epochs: their epoch axis continues across episodes.
        self._per_episode = epochs_per_episode

    def _step(self, epoch: int, episode: int = 0) -> int:
        return epoch + episode * self._per_episode if self._per_episode else epoch

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            self._writer.add_scalar(tag, float(value), step)

    def handle(self, record: Record) -> None:
        e = record.event
        if isinstance(e, ev.EpochMetrics):
            self._epoch(e, record.env)
        elif isinstance(e, ev.SeedMetrics):
            for name in SEED_SCALARS:
                self._scalar(f"seed/{e.slot}/{name}", getattr(e, name), e.epoch)
        elif isinstance(e, ev.PPOUpdate):
            for name in PPO_SCALARS:
                self._scalar(f"ppo/{name}", getattr(e, name), e.update)
        elif e.kind.startswith("diag."):
            for tag, value in diag_scalars(e).items():
                self._scalar(tag, value, getattr(e, "epoch", 0))

    def _epoch(self, e: ev.EpochMetrics, env: int) -> None:
        step = self._step(e.epoch, e.episode)
        prefix = f"env{env}/" if env else ""
        for tag, name in EPOCH_SCALARS.items():
            self._scalar(prefix + tag, getattr(e, name), step)
        for s in e.slots:
            self._scalar(f"{prefix}alpha/{s.slot}", s.alpha, step)
            self._scalar(f"{prefix}contribution/{s.slot}", s.contribution, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
