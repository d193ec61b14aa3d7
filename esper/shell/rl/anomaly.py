"""PPO anomaly checks (docs/rl.md §9): warnings after each update, at most one per kind per update.

The checks read the update's fetched numbers only (no device work). Streaks count consecutive
updates a kind fired and are checkpointed; `nonfinite` aborts the run after `nonfinite_abort`.
"""


import attrs

from esper.core.events import RLAnomaly
from esper.core.rl_config import RLConfig
from esper.shell.rl.rollout import RolloutBuffer
from esper.shell.rl.update import HEAD_NAMES, UpdateResult


class PolicyDiverged(RuntimeError):
    """Non-finite updates `nonfinite_abort` times in a row (exit 1 after a checkpoint)."""


@attrs.frozen
class AnomalyState:
    streaks: dict[str, int] = attrs.field(factory=dict)


def _value_collapse_threshold(progress: float) -> float:
    for limit, threshold in ((0.10, -0.5), (0.25, -0.2), (0.75, 0.0)):
        if progress < limit:
            return threshold
    return 0.1


def findings(r: UpdateResult, cfg: RLConfig, progress: float) -> list[tuple[str, float, float, str | None]]:
    """(kind, value, threshold, head) of every check that fires for this update."""
    if not r.applied:
        return [("nonfinite", float("nan"), 0.0, None)]
    heads, d = r.diagnostics["heads"], r.diagnostics
    out: list[tuple[str, float, float, str | None]] = []
    acted = {h: heads[h].get("relevant_frac", 0.0) > 0 for h in HEAD_NAMES}
    for h in HEAD_NAMES:
        if not acted[h]:
            continue
        if heads[h]["ratio_max"] > cfg.ratio_explosion:
            out.append(("ratio_explosion", heads[h]["ratio_max"], cfg.ratio_explosion, h))
        if heads[h]["ratio_min"] < cfg.ratio_collapse:
            out.append(("ratio_collapse", heads[h]["ratio_min"], cfg.ratio_collapse, h))
        if heads[h]["entropy"] < cfg.entropy_collapse_any:
            out.append(("entropy_collapse", heads[h]["entropy"], cfg.entropy_collapse_any, h))
    kl_limit = cfg.kl_spike_factor * cfg.target_kl
    if d.get("joint_approx_kl", 0.0) > kl_limit:
        out.append(("kl_spike", d["joint_approx_kl"], kl_limit, None))
    if heads["op"].get("clip_frac", 0.0) > cfg.clip_saturation:
        out.append(("clip_saturation", heads["op"]["clip_frac"], cfg.clip_saturation, "op"))
    ev_limit = _value_collapse_threshold(progress)
    if r.rollout_explained_variance < ev_limit:
        out.append(("value_collapse", r.rollout_explained_variance, ev_limit, None))
    if d.get("value_std", 1.0) < cfg.value_flat_std and r.return_std > cfg.value_flat_return_std:
        out.append(("value_flat", d["value_std"], cfg.value_flat_std, None))
    if progress < 0.5 and heads["op"].get("entropy", 1.0) < cfg.entropy_collapse_op:
        out.append(("entropy_collapse", heads["op"]["entropy"], cfg.entropy_collapse_op, "op"))
    return out


def check_update(state: AnomalyState, r: UpdateResult, buffer: RolloutBuffer, cfg: RLConfig, *,
                 update: int) -> tuple[AnomalyState, list[RLAnomaly]]:
    """Events for this update (one per kind) and the new streaks; raises PolicyDiverged when the
    non-finite streak reaches `nonfinite_abort`."""
    del buffer  # the buffer's own finiteness shows up as a non-finite loss
    progress = (update - 1) / max(cfg.updates, 1)  # `update` counts from 1
    found = findings(r, cfg, progress)
    kinds: dict[str, tuple[float, float, str | None]] = {}
    for kind, value, threshold, head in found:
        kinds.setdefault(kind, (value, threshold, head))
    streaks = {k: (state.streaks.get(k, 0) + 1 if k in kinds else 0) for k in {*state.streaks, *kinds}}
    events = [RLAnomaly(check=k, value=v, threshold=t, update=update, head=h, streak=streaks[k])
              for k, (v, t, h) in kinds.items()]
    new_state = AnomalyState(streaks)
    if streaks.get("nonfinite", 0) >= cfg.nonfinite_abort:
        raise PolicyDiverged(f"policy update non-finite {streaks['nonfinite']} times in a row (update {update})")
    return new_state, events
