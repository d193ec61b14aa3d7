"""Process-wide settings, made once per process by the run driver (docs/runtime.md §2.5).

torch keeps a few switches per process, not per model: deterministic algorithms, cuDNN's autotuner,
the float32 matmul precision, and cuBLAS's workspace (an environment variable CUDA reads when it
starts). A `Trainer` is built once per run and once per RL env, so it must not touch them; the run
driver asks for them once, for the run's whole life:

    deterministic = (device is CPU), unless --deterministic / --no-deterministic says otherwise
    deterministic: use_deterministic_algorithms(True), cudnn.benchmark off,
                   CUBLAS_WORKSPACE_CONFIG=:4096:8 on CUDA (unless the user set it)
    otherwise:     use_deterministic_algorithms(False), cudnn.benchmark on, TF32 matmuls on CUDA

`process_settings` applies them only when they differ from what the process already has, so asking
twice for the same settings changes nothing. While a run holds them, a second run asking for other
settings is refused (a `ConfigError`): two runs sharing one process at once cannot disagree. Runs
one after another (`esper-run compare`, a test session) may differ: each applies its own on entry.
Threads stay torch's (OMP_NUM_THREADS): esper sets none.
"""

import contextlib
import os
from collections.abc import Iterator

import attrs
import torch

from esper.core.errors import ConfigError


@attrs.frozen
class ProcessSettings:
    deterministic: bool
    cuda: bool  # TF32 and cuBLAS's workspace concern CUDA only

    @classmethod
    def for_run(cls, requested: bool | None, device: torch.device) -> "ProcessSettings":
        """On by default on CPU, off on CUDA; `requested` (the --deterministic flag) overrides."""
        cuda = device.type == "cuda"
        return cls(deterministic=not cuda if requested is None else requested, cuda=cuda)


@attrs.define
class _Process:
    applied: ProcessSettings | None = None  # what torch is set to by esper (None: untouched)
    holders: int = 0  # runs open in this process


_PROCESS = _Process()


def applied_settings() -> ProcessSettings | None:
    """The settings esper last applied in this process (None if no run has started)."""
    return _PROCESS.applied


@contextlib.contextmanager
def process_settings(settings: ProcessSettings) -> Iterator[ProcessSettings]:
    """Hold the process's settings for one run: applied on entry when they differ, refused when
    another run still open in this process holds different ones."""
    if _PROCESS.holders and settings != _PROCESS.applied:
        raise ConfigError(f"this process already runs with {_PROCESS.applied}; a run asking for {settings} "
                          "needs a process of its own")
    if settings != _PROCESS.applied:
        _apply(settings)
        _PROCESS.applied = settings
    _PROCESS.holders += 1
    try:
        yield settings
    finally:
        _PROCESS.holders -= 1


def _apply(settings: ProcessSettings) -> None:
    if settings.deterministic and settings.cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(settings.deterministic, warn_only=False)
    torch.backends.cudnn.benchmark = not settings.deterministic
    torch.set_float32_matmul_precision("high" if settings.cuda and not settings.deterministic else "highest")
