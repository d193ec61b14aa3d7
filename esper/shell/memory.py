"""Memory telemetry of one epoch (docs/runtime.md §4.3): host RSS everywhere, CUDA peaks on CUDA.

    epoch e:  reset_peaks(device)  at launch (step 0)
              read_memory(device)  at collect, after the epoch's one device→host fetch (step 3)

    host_rss_mb       = resident pages now × page size            (/proc/self/statm; None where absent)
    host_peak_rss_mb  = max(ru_maxrss, host_rss_mb), the peak since start  (ru_maxrss: KiB on Linux, bytes on macOS)
    cuda_peak_*_mb    = torch.cuda.max_memory_{allocated,reserved}(device) since the reset at e's launch

The CUDA counters are the caching allocator's host-side bookkeeping: reading or resetting them
queues nothing on the device and waits for nothing, so the hot path stays free of host syncs.
They are per process and device, so with several envs on one device each env's reading is the
device's peak since the last env launched, not that env's own. MiB = 2**20 bytes.
"""

import os
import resource
import sys

import attrs
import torch

MIB = float(2**20)
STATM = "/proc/self/statm"


@attrs.frozen
class MemoryReading:
    host_rss_mb: float | None
    host_peak_rss_mb: float
    cuda_peak_allocated_mb: float | None = None
    cuda_peak_reserved_mb: float | None = None


def host_rss_mb() -> float | None:
    """Current resident set size; None where the OS has no /proc (macOS, Windows)."""
    try:
        with open(STATM, encoding="ascii") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MIB


def host_peak_rss_mb() -> float:
    """The process's peak RSS since it started (getrusage cannot reset it).

    Linux folds each thread's cached RSS count into the high-water mark lazily, so ru_maxrss can
    trail statm's current RSS by a few pages; a peak below the current value is never reported.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / MIB if sys.platform == "darwin" else peak / 1024.0
    return max(peak_mb, host_rss_mb() or 0.0)


def reset_peaks(device: torch.device) -> None:
    """At an epoch's launch: the CUDA peaks restart from what is allocated now."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def read_memory(device: torch.device) -> MemoryReading:
    """At an epoch's boundary, after its fetch: the epoch's memory numbers (CUDA ones None off CUDA)."""
    reading = MemoryReading(host_rss_mb=host_rss_mb(), host_peak_rss_mb=host_peak_rss_mb())
    if device.type != "cuda":
        return reading
    return attrs.evolve(reading, cuda_peak_allocated_mb=torch.cuda.max_memory_allocated(device) / MIB,
                        cuda_peak_reserved_mb=torch.cuda.max_memory_reserved(device) / MIB)
