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
        elif isinstance(e, ev.DiagGradients):
            for group, value in e.groups.items():
                self._scalar(f"grad_rms/{group}", value, e.epoch)
        elif isinstance(e, ev.DiagSharpness):
            self._scalar("diag/sharpness", e.sharpness, e.epoch)

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
