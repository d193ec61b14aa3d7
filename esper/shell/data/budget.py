"""The data budget (docs/runtime.md §5.7): how many decoded bytes a run may keep on its device.

    resident  ⇔  nbytes(train) + nbytes(held-out)  ≤  budget

A task whose decoded splits fit stays device-resident (read once, batches are gathers on the
device); a larger one streams through a DataLoader (esper.shell.data.streamed). `--data-budget B`
sets the budget in bytes (`0` forces streaming; esper.shell.run_config.parse_bytes reads the flag);
without it the budget is `DEFAULT_FRACTION` of the device's free memory (CUDA:
`torch.cuda.mem_get_info`) or of the available RAM (CPU).
"""

import os

import torch

# Half of what is free: the other half is left to the model, its optimizer state, activations, the
# validation pass's tiled variants and compile workspaces, which grow with the network (seeds).
DEFAULT_FRACTION = 0.5


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


def data_path(decoded_bytes: int, budget: int | None) -> str:
    """The path data of `decoded_bytes` (Σ `image_source.nbytes` of its splits) takes under `budget`
    (None: no limit): "resident" when it fits, else "streamed". The one rule (`esper-run tasks` says it too)."""
    return "resident" if budget is None or decoded_bytes <= budget else "streamed"
