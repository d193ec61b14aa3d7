"""The data budget (docs/runtime.md §5.5): how many decoded bytes a run may keep on its device.

    resident  ⇔  nbytes(train) + nbytes(held-out)  ≤  budget

A task whose decoded splits fit stays device-resident (read once, batches are gathers on the
device); a larger one streams through a DataLoader (esper.shell.data.streamed). `--data-budget B`
sets the budget in bytes (`0` forces streaming); without it the budget is `DEFAULT_FRACTION` of
the device's free memory (CUDA: `torch.cuda.mem_get_info`) or of the available RAM (CPU).
"""

import argparse
import os
import re

import torch

# Half of what is free: the other half is left to the model, its optimizer state, activations, the
# validation pass's tiled variants and compile workspaces, which grow with the network (seeds).
DEFAULT_FRACTION = 0.5
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """"4096", "512K", "1.5G", "2GiB" → bytes (binary multiples: K = 2**10); ValueError otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size in bytes (a number with an optional K, M, G or T suffix)")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def byte_size(text: str) -> int:
    """`parse_bytes` as an argparse type: a bad value is argparse's one-line error (exit 2)."""
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def available_ram() -> int:
    """Bytes of RAM the OS can still hand out (MemAvailable), or all of it where that is unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def data_budget_bytes(device: torch.device | str, flag: int | None) -> int:
    """The budget in bytes: `flag` when given (`--data-budget`), else `DEFAULT_FRACTION` of the free
    memory of `device` (CUDA) or of the available RAM (any other device)."""
    if flag is not None:
        return flag
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * DEFAULT_FRACTION)
    return int(available_ram() * DEFAULT_FRACTION)
