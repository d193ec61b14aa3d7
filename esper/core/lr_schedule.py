r"""Learning-rate schedule of a run: the factor every optimizer group's lr is multiplied by for the
epoch about to train (the specs are silent; esper's choice, recorded in the task preset).

    constant:  s(e) = 1
    cosine:    s(e) = ½ · (1 + cos(π · e / E))

Time index: e = epochs already trained (0 … E − 1), E = the run's epochs. The first epoch trains at
the full lr and the last at s(E − 1) > 0. The schedule follows the run's epochs, not the growth:
a seed germinated at epoch e trains at the host's current factor (its stage scale on top).

Every preset keeps the specs' constant lr; `--lr-schedule cosine` (or `lr_schedule` in a config
file) decays it. Why offer it: at a constant SGD lr the final-epoch accuracy of the small image
hosts swings by about ±1 point from one epoch to the next (Fashion-MNIST, measured), as large as
the effect a growth comparison at equal epochs looks for; a decayed run ends on a settled model.
"""

import math

SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """s(e) for the epoch that starts after `epoch` completed ones, in a run of `epochs`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"lr schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch must be in [0, {epochs}), got {epoch}")
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
