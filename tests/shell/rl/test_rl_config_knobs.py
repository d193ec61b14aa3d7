"""No dead knobs (docs/rl.md §10 item 17): every `RLConfig` field changes some runtime value.

The test is parametrized over `attrs.fields(RLConfig)`, so a new field without a probe fails. Each probe
is (a valid perturbed value, a measurement cfg → runtime value); the measurement runs the smallest piece
of real code that reads the field (a reward component, the PPO loss, a normaliser output, the policy, a
`ppo_update` on a synthetic rollout, an anomaly finding list, a checkpoint folder), once with the default
config and once with only that field perturbed, and the two outputs must differ.

The same probe values reach the field from the command line (`--rl.FIELD VALUE`) and from a config file's
`[rl]` table, and land in the RLConfig the PPO run builds (`runner.rl_config`, what `PPORun` calls).
"""

import functools
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import torch

from esper.core.actions import Op
from esper.core.ppo import PPOBatch, PPOCoefs, entropy_coef, ppo_loss
from esper.core.rewards import RewardComponents, RewardInputs, reward
from esper.core.rl_config import RLConfig
from esper.core.running_stats import RunningStats, normalize
from esper.core.sampling import relevance
from esper.core.stages import Stage
from esper.shell.cli import config_from_args, parser
from esper.shell.nets.policy import PolicyNet
from esper.shell.rl.anomaly import AnomalyState, PolicyDiverged, check_update, findings
from esper.shell.rl.rollout import RolloutBuffer
from esper.shell.rl.runner import PPORun, build_learner, rl_config, rolling_best
from esper.shell.rl.update import (
    HEAD_NAMES,
    Normalisers,
    UpdateResult,
    advantages,
    merge_returns,
    ppo_update,
    reward_scale,
)
from esper.shell.run_checkpoint import save_run_checkpoint

CPU = torch.device("cpu")
N, E, D, S, K, T3 = 4, 3, 6, 2, 3, 3  # envs, steps, obs dim, slots, blueprints, tempo choices
DIMS = (D, S, K)
MIN_FOSSIL = 0.01  # G5's threshold, passed to the reward


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/shell/rl/conftest.py


# --- synthetic runtime situations --------------------------------------------------------------------------


def _buffer(policy: PolicyNet | None = None, reward_scale_by: float = 1.0) -> RolloutBuffer:
    """A full, valid [N, E] rollout; with a policy, logp and value are the policy's own (as `collect` stores)."""
    g = torch.Generator().manual_seed(7)
    buf = RolloutBuffer.empty(N, E, D, S, K, T3)
    buf.obs = torch.randn(N, E, D, generator=g)
    buf.obs_raw = buf.obs.clone()
    op = torch.randint(0, 4, (N, E), generator=g)
    u = relevance(op)
    picks = [op] + [torch.randint(0, n, (N, E), generator=g) for n in (S, K, T3)]
    buf.actions = torch.stack(picks, -1) * (u > 0).long()  # irrelevant heads canonical 0
    buf.relevance = u
    buf.op_mask[:], buf.slot_mask[:], buf.bp_mask[:], buf.tempo_mask[:] = True, True, True, True
    buf.reward = torch.randn(N, E, generator=g) * reward_scale_by
    buf.value = torch.randn(N, E, generator=g)
    buf.valid[:] = 1.0
    buf.terminal[:, -1] = 1.0
    if policy is not None:
        with torch.no_grad():
            buf.logp, _, buf.value = policy.evaluate(buf.obs, buf.actions, buf.masks)
    return buf


@functools.cache  # the default config's update serves several probes
def _update(cfg: RLConfig) -> tuple[UpdateResult, torch.Tensor]:
    """One real `ppo_update` of a `build_learner` policy on a rollout it produced; (result, new parameters).

    A narrow policy keeps it fast; the width knobs have their own probe."""
    cfg = attrs.evolve(cfg, hidden=16, head_hidden=8)
    learner = build_learner(DIMS, cfg, 0, CPU)
    buf = _buffer(learner.policy)
    result, _ = ppo_update(learner.policy, learner.optimizer, buf, Normalisers.initial(D), cfg, update=0,
                           shuffle=torch.Generator().manual_seed(1), device=CPU)
    params = torch.cat([p.detach().reshape(-1) for p in learner.policy.parameters()])
    return result, params


def _reward_inputs() -> RewardInputs:
    """One terminal step where every component is non-zero: two measured seeds (one fossilized), rent,
    a rollback and a young cull."""
    f = torch.tensor

    def ints(*v: int) -> torch.Tensor:
        return f(v, dtype=torch.int64)

    return RewardInputs(
        stage_before=ints(Stage.BLENDING, Stage.PROBATIONARY), stage_after=ints(Stage.PROBATIONARY, Stage.FOSSILIZED),
        contribution=f([0.03, 0.2]), measured=f([1.0, 1.0]), acc_at_germination=f([0.5, 0.1]),
        last_contribution=f([0.03, 0.2]), seed_params_before=f([1000.0, 2000.0]), host_params=f(10000.0),
        acc=f(0.8), op=f(int(Op.CULL)), slot=f(0), culled_age=f(2.0), terminal=f(1.0), rolled_back=f(1.0))


def _reward(mode: str | None = None) -> Callable[[RLConfig], list[torch.Tensor]]:
    """All components of `reward` (in `mode`, else the config's own)."""

    def measure(cfg: RLConfig) -> list[torch.Tensor]:
        if mode is not None:
            cfg = attrs.evolve(cfg, reward_mode=mode)
        out = reward(_reward_inputs(), cfg, MIN_FOSSIL)
        return [getattr(out, a.name) for a in attrs.fields(RewardComponents)]

    return measure


def _loss(cfg: RLConfig) -> list[torch.Tensor]:
    """`ppo_loss` with `PPOCoefs.from_config` on a batch with moved ratios and values: loss and diagnostics."""
    g = torch.Generator().manual_seed(3)
    logp_old = torch.randn(2, 3, 4, generator=g) * 0.1
    batch = PPOBatch(logp_old=logp_old, value_old=torch.zeros(2, 3), relevance=torch.ones(2, 3, 4),
                     valid=torch.ones(2, 3), advantages=torch.randn(2, 3, generator=g),
                     returns=torch.randn(2, 3, generator=g))
    logp = logp_old + torch.randn(2, 3, 4, generator=g) * 0.5  # ratios well outside 1 ± 0.2
    value = torch.randn(2, 3, generator=g)  # moves far beyond ±0.2 from value_old
    ent = torch.rand(2, 3, 4, generator=g)
    coefs = PPOCoefs.from_config(cfg, entropy_coef(0, cfg.updates, cfg))
    loss, diag = ppo_loss(logp, ent, value, batch, coefs)
    return [loss, diag.clip_frac, diag.value_loss]


def _normalised(x: float, var: float) -> Callable[[RLConfig], torch.Tensor]:
    """`normalize` as `collect_rollout` calls it, for one non-binary feature."""

    def measure(cfg: RLConfig) -> torch.Tensor:
        stats = RunningStats(mean=torch.zeros(1), var=torch.full((1,), var), count=torch.tensor(10.0))
        return normalize(stats, torch.tensor([x]), torch.tensor([False]), cfg.obs_std_floor, cfg.obs_clip)

    return measure


def _masked_logp(cfg: RLConfig) -> torch.Tensor:
    """Log-probs of a policy built by the runner when FOSSILIZE is masked out."""
    policy = build_learner(DIMS, attrs.evolve(cfg, hidden=16, head_hidden=8), 0, CPU).policy
    buf = _buffer()
    ops = buf.actions[..., 0] % 3  # WAIT, GERMINATE, CULL only: legal under the mask
    actions = torch.cat([ops[..., None], buf.actions[..., 1:]], -1) * (relevance(ops) > 0).long()
    masks = attrs.evolve(buf.masks, op=buf.op_mask.clone())
    masks.op[..., int(Op.FOSSILIZE)] = False
    with torch.no_grad():
        return policy.evaluate(buf.obs, actions, masks)[0]


# --- anomaly checks ----------------------------------------------------------------------------------------

_HEAD = {"relevant_frac": 1.0, "ratio_max": 1.0, "ratio_min": 1.0, "entropy": 0.5, "clip_frac": 0.0}
_QUIET = UpdateResult(
    applied=True, epochs_done=4, minibatches_done=8, stop_epoch=None, stop_minibatch=None, initial_logratio_max=0.0,
    grad_norm_mean=0.1, grad_norm_max=0.1, reward_scale=1.0, clip_frac_reward=0.0, advantage_mean=0.0,
    advantage_std=1.0, return_mean=0.0, return_std=1.0, rollout_explained_variance=1.0, entropy_coef=0.05,
    diagnostics={"heads": {h: dict(_HEAD) for h in HEAD_NAMES}, "joint_approx_kl": 0.0, "value_std": 1.0})


def _crafted(head: dict[str, float] | None = None, **scalars: float) -> UpdateResult:
    """The quiet result with the op head's and the top-level diagnostics overridden."""
    diag = {"heads": {h: dict(_HEAD, **(head or {})) if h == "op" else dict(_HEAD) for h in HEAD_NAMES},
            "joint_approx_kl": scalars.pop("joint_approx_kl", 0.0), "value_std": scalars.pop("value_std", 1.0)}
    return attrs.evolve(_QUIET, diagnostics=diag, **scalars)


def _findings(result: UpdateResult, progress: float = 0.9) -> Callable[[RLConfig], list[Any]]:
    def measure(cfg: RLConfig) -> list[Any]:
        return findings(result, cfg, progress)

    return measure


def _nonfinite_streak(cfg: RLConfig) -> str:
    try:
        check_update(AnomalyState(), attrs.evolve(_QUIET, applied=False), None, cfg, update=1)  # type: ignore[arg-type]
    except PolicyDiverged:
        return "aborted"
    return "continued"


# --- checkpoints -------------------------------------------------------------------------------------------


class _LoopOnly:
    """Just enough of a `PPORun` for its real `step`: batches are no-ops; the loop is the driver's."""

    step = PPORun.step

    def __init__(self, rl: RLConfig) -> None:
        self.rl, self.total = rl, rl.updates
        self.learner = SimpleNamespace(batch=0, history=[])

    def one_batch(self, hub: Any) -> None:
        self.learner.batch += 1
        self.learner.history.append({"final_acc": 0.5})


def _checkpoint_names(cfg: RLConfig, tmp: Path) -> list[str]:
    loop = _LoopOnly(cfg)
    saved = []
    while loop.learner.batch < loop.total:  # the driver's loop, without files
        saved += [save.name for save in loop.step(None)]
    return saved


def _kept_checkpoints(cfg: RLConfig, tmp: Path) -> list[str]:
    folder = tmp / "checkpoints"
    for i in range(1, 6):
        save_run_checkpoint(folder, f"update-{i:05d}", {"progress": {"epoch": i}}, cfg.keep_checkpoints,
                            pattern="update-*.pt")
    return sorted(p.name for p in folder.glob("update-*.pt"))


def _best(cfg: RLConfig) -> bool:
    # Window 5: the latest 5-mean (0.18) beats every earlier one; window 1: 0.4 is below the earlier 0.5.
    return rolling_best([0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.4], cfg.best_window)


# --- the probes --------------------------------------------------------------------------------------------


def _param_count(cfg: RLConfig) -> int:
    return sum(p.numel() for p in build_learner(DIMS, cfg, 0, CPU).policy.parameters())


def _advantages(cfg: RLConfig) -> list[torch.Tensor]:
    buf = _buffer()
    return list(advantages(buf, buf.reward, cfg))


def _scale_of_tiny_returns(cfg: RLConfig) -> torch.Tensor:
    buf = _buffer(reward_scale_by=1e-7)  # discounted-return std ~1e-7: below the default floor
    return reward_scale(merge_returns(RunningStats.initial(1), buf, cfg), cfg)


def _minibatches(cfg: RLConfig) -> int:
    return _update(cfg)[0].minibatches_done


def _params_after_update(cfg: RLConfig) -> torch.Tensor:
    return _update(cfg)[1]


def _reward_clip_frac(cfg: RLConfig) -> float:
    return _update(cfg)[0].clip_frac_reward


def _entropy_coef_at(update: int, total: int) -> Callable[[RLConfig], float]:
    return lambda cfg: entropy_coef(update, total, cfg)


Measure = Callable[..., Any]
TMP = object()  # marks a measurement that needs a scratch folder


@attrs.frozen
class Probe:
    value: Any  # the perturbed value (valid under RLConfig's checks)
    measure: Measure  # cfg → runtime value, or (cfg, folder) → runtime value when `tmp`
    tmp: bool = False


PROBES: dict[str, Probe] = {
    # returns
    "gamma": Probe(0.9, _advantages),
    "gae_lambda": Probe(0.5, _advantages),
    # rollouts and updates
    "n_envs": Probe(4, lambda cfg: cfg.updates),
    "episodes": Probe(80, lambda cfg: cfg.updates),
    "ppo_epochs": Probe(1, _minibatches),
    "minibatch_envs": Probe(2, _minibatches),
    "clip_eps": Probe(0.05, _loss),
    "value_clip_eps": Probe(0.05, _loss),
    "value_coef": Probe(1.0, _loss),
    "entropy_coef_start": Probe(0.02, _entropy_coef_at(0, 10)),
    "entropy_coef_end": Probe(0.0, _entropy_coef_at(10, 10)),
    "entropy_anneal_frac": Probe(1.0, _entropy_coef_at(2, 10)),
    "max_grad_norm": Probe(1e-6, _params_after_update),
    "target_kl": Probe(1e-9, _minibatches),
    "kl_stop_factor": Probe(1e-7, _minibatches),
    "lr": Probe(1e-2, _params_after_update),
    "adam_eps": Probe(1.0, _params_after_update),
    "weight_decay": Probe(0.1, _params_after_update),
    # policy network
    "policy": Probe("mlp", _param_count),
    "hidden": Probe(16, _param_count),
    "head_hidden": Probe(8, _param_count),
    "masked_logit": Probe(-1.0, _masked_logp),
    "op_prior": Probe((1.0, 0.0, -2.0, 0.0), _masked_logp),
    # observation normaliser: std 0.01 is below the 0.1 floor; 10σ is beyond the clip of 5
    "obs_std_floor": Probe(0.01, _normalised(0.02, 1e-4)),
    "obs_clip": Probe(2.0, _normalised(10.0, 1.0)),
    # rewards
    "reward_mode": Probe("sparse", _reward()),
    "contribution_weight": Probe(5.0, _reward("shaped")),
    "contribution_cap": Probe(0.01, _reward("shaped")),
    "contribution_total_cap": Probe(0.5, _reward("shaped")),
    "potentials": Probe((0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.0, 0.0, 0.0), _reward("shaped")),
    "rent_weight": Probe(0.1, _reward("shaped")),
    "rent_cap": Probe(0.001, _reward("shaped")),
    "terminal_acc_weight": Probe(0.5, _reward("shaped")),
    "terminal_fossil_weight": Probe(0.5, _reward("shaped")),
    "governor_penalty": Probe(0.5, _reward("shaped")),
    "sparse_param_weight": Probe(1.0, _reward("sparse")),
    "sparse_param_scale": Probe(1000.0, _reward("sparse")),
    "early_cull_penalty": Probe(0.5, _reward("minimal")),
    "early_cull_age": Probe(1, _reward("minimal")),
    "reward_clip": Probe(0.1, _reward_clip_frac),
    "reward_std_floor": Probe(1e-9, _scale_of_tiny_returns),
    # checkpoints
    "checkpoint_every": Probe(7, _checkpoint_names, tmp=True),
    "keep_checkpoints": Probe(1, _kept_checkpoints, tmp=True),
    "best_window": Probe(1, _best),
    # anomaly checks: each crafted result sits between the default threshold and the perturbed one
    "ratio_explosion": Probe(2.0, _findings(_crafted({"ratio_max": 3.0}))),
    "ratio_collapse": Probe(0.6, _findings(_crafted({"ratio_min": 0.5}))),
    "kl_spike_factor": Probe(2.0, _findings(_crafted(joint_approx_kl=0.05))),
    "clip_saturation": Probe(0.1, _findings(_crafted({"clip_frac": 0.2}))),
    "value_flat_std": Probe(1e-2, _findings(_crafted(value_std=5e-3))),
    "value_flat_return_std": Probe(0.01, _findings(_crafted(value_std=1e-4, return_std=0.05))),
    "entropy_collapse_op": Probe(0.05, _findings(_crafted({"entropy": 0.08}), progress=0.0)),
    "entropy_collapse_any": Probe(0.06, _findings(_crafted({"entropy": 0.05}))),
    "nonfinite_abort": Probe(1, _nonfinite_streak),
}

FIELDS = [f.name for f in attrs.fields(RLConfig)]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_every_field_has_exactly_one_probe():
    assert set(PROBES) == set(FIELDS), (f"fields without a probe: {sorted(set(FIELDS) - set(PROBES))}; "
                                        f"probes without a field: {sorted(set(PROBES) - set(FIELDS))}")


@pytest.mark.parametrize("name", FIELDS)
def test_perturbing_the_field_changes_a_runtime_value(name: str, tmp_path: Path):
    if name not in PROBES:
        pytest.fail(f"RLConfig.{name} has no probe: add one (or report it as a dead knob)")
    probe = PROBES[name]
    default = RLConfig()
    perturbed = attrs.evolve(default, **{name: probe.value})  # validates the perturbed value too
    assert getattr(perturbed, name) != getattr(default, name)
    if probe.tmp:
        before, after = probe.measure(default, tmp_path / "default"), probe.measure(perturbed, tmp_path / "perturbed")
    else:
        before, after = probe.measure(default), probe.measure(perturbed)
    assert not _same(before, after), f"RLConfig.{name} = {probe.value!r} changed nothing its probe reads: dead knob?"


def test_the_probe_comparison_can_fail():
    """`_same` is the test's only judge: it must see equal outputs as equal."""
    assert _same(_reward("shaped")(RLConfig()), _reward("shaped")(RLConfig()))
    first, second = _update.__wrapped__(RLConfig()), _update.__wrapped__(RLConfig())
    assert _same(first[0].minibatches_done, second[0].minibatches_done) and _same(first[1], second[1])
    assert not _same(torch.zeros(2), torch.tensor([0.0, 1e-7]))


def _flag_text(value: Any) -> str:
    return ",".join(map(repr, value)) if isinstance(value, tuple) else value if isinstance(value, str) else repr(value)


def _toml_text(value: Any) -> str:
    return f"[{', '.join(map(repr, value))}]" if isinstance(value, tuple) else f'"{value}"' if isinstance(
        value, str) else repr(value).lower() if isinstance(value, bool) else repr(value)


@pytest.mark.parametrize("name", FIELDS)
@pytest.mark.parametrize("source", ["flag", "table"])
def test_every_field_is_settable_and_lands_in_the_runs_rl_config(name: str, source: str, tmp_path: Path):
    value = PROBES[name].value
    if source == "flag":
        argv = ["train", "--controller", "ppo", f"--rl.{name}", _flag_text(value)]
    else:
        toml = tmp_path / "run.toml"
        toml.write_text(f"[rl]\n{name} = {_toml_text(value)}\n", encoding="utf-8")
        argv = ["train", "--controller", "ppo", "--config", str(toml)]
    rl = rl_config(config_from_args(parser().parse_args(argv)))
    assert rl == attrs.evolve(RLConfig(), **{name: value})
