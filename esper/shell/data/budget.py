"""How many bytes of decoded data a run keeps resident on its device (docs/runtime.md §5.5).

A placeholder in one place: the streamed data path (`--data-budget`) owns and refines it. Data
whose decoded size fits stays resident (read whole onto the device); larger data is streamed.

    budget(cpu)  = 25 % of the machine's RAM
    budget(cuda) = 50 % of the device's free memory
"""

import os

import torch

CPU_FRACTION, CUDA_FRACTION = 0.25, 0.5


def data_budget_bytes(device: torch.device | str) -> int:
    """The bytes of decoded data a run on `device` may keep resident."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(CUDA_FRACTION * free)
    return int(CPU_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def data_path(nbytes: int, device: torch.device | str) -> str:
    """"resident" when `nbytes` fit the budget, else "streamed"."""
    return "resident" if nbytes <= data_budget_bytes(device) else "streamed"
