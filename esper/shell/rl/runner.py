"""`esper-run train --controller ppo`: learn when to grow (docs/rl.md §6, §8, §9).

The run driver (`esper.shell.driver`) opens, loops, checkpoints and closes every run; this is what a
PPO learning run adds to it (one step = one batch):

    open     one read-only copy of the data per device → policy, Adam, normalisers
    step b   VecEnv(b) → collect_rollout → ppo_update → telemetry, anomaly checks, a ppo.csv row
             and one episodes.csv row per episode (DD-PPO, docs/rl.md §12: each rank collects its envs,
             every rank gathers the whole batch and updates alike; rank 0 alone writes ppo.csv,
             episodes.csv, rollouts/, policy.pt, rl_summary.json)
             → `update-NNNNN` every `--checkpoint-every` updates (default 10) and at the last; `best` (a side copy)
             when the rolling mean final accuracy is the best yet
    close    Ctrl-C, SIGTERM or a diverged policy: `update-NNNNN` of the last finished batch (an
             interrupt inside a batch, mid-update too, is put back to it by the driver first)
             → ok: policy.pt (the trained policy for `--policy`), rl_summary.json (with the return's
             correlation with final accuracy and training FLOPs over every episode), the summary lines

Resume restores the policy, optimizer, normalisers, counters and telemetry state, and continues at
the next batch; every generator of a batch derives from (run seed, batch), so the continuation is
the uninterrupted run's, bit for bit on CPU.
"""

import copy
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch

from esper.core import codec
from esper.core.errors import ConfigError
from esper.core.events import EnvTruncated, Event, PPOUpdate, RLRunEnded, RLRunStarted
from esper.core.observation import obs_dim
from esper.core.rl_config import RLConfig
from esper.shell import report_data
from esper.shell.checkpoint import CheckpointError, write_atomic
from esper.shell.data.taskdata import TaskData
from esper.shell.dist import Ranks, digest, tensor_digest
from esper.shell.nets.policy import PolicyNet
from esper.shell.rl.anomaly import AnomalyState, PolicyDiverged, check_update
from esper.shell.rl.collect import collect_rollout
from esper.shell.rl.ddppo import check_world, env_facts, env_rank, gather_rollout, rollout_event
from esper.shell.rl.envs import ACTING_STREAM, SHUFFLE_STREAM, VecEnv, batch_generator
from esper.shell.rl.episodes import (
    EPISODE_COLUMNS,
    EPISODES_CSV,
    LOGGED,
    append_rows,
    batch_means,
    describe_correlation,
    episode_returns,
    episode_rows,
    return_correlation,
)
from esper.shell.rl.record import save_rollout_record
from esper.shell.rl.update import HEAD_NAMES, Normalisers, UpdateResult, ppo_update
from esper.shell.rl.update_numerics import update_compile_mode
from esper.shell.run_checkpoint import ResumePoint, Save, versions
from esper.shell.run_config import RunConfig
from esper.shell.telemetry import RunDirectory, TelemetryHub
from esper.shell.user_code import UserParts

FORMAT = "esper.rl_run"
POLICY_FILE = "policy.pt"
PPO_CSV = "ppo.csv"
# What a PPO resume may change: `episodes` may grow; where and how it reports (docs/rl.md §8).
PPO_RESUMABLE = ("episodes", "device", "compile", "telemetry_level", "profile", "events", "tensorboard", "progress",
                 "report", "checkpoint_every", "dist_timeout", "wandb", "wandb_project", "wandb_entity",
                 "data_budget", "data_workers")
PPO_COLUMNS = (*report_data.PPO_COLUMNS, *report_data.PPO_OPTIONAL)  # ppo.csv's header: what the report reads


@attrs.define
class Learner:
    """Everything a PPO run carries from one batch to the next (the checkpoint's contents)."""

    policy: PolicyNet
    optimizer: torch.optim.Optimizer
    norms: Normalisers
    batch: int = 0  # next batch to collect == updates done
    episodes: int = 0
    env_steps: int = 0
    anomalies: AnomalyState = attrs.field(factory=AnomalyState)
    history: list[dict[str, Any]] = attrs.field(factory=list)  # per update: mean final acc, return
    episode_log: list[dict[str, float]] = attrs.field(factory=list)  # per episode: `episodes.LOGGED`


def rl_config(cfg: RunConfig) -> RLConfig:
    """The run's RLConfig: every field from `--rl.FIELD` / `[rl]`, n_envs, episodes, reward (run_config);
    `--checkpoint-every` counts updates here (unset: RLConfig's own, `--rl.checkpoint_every`)."""
    rl = cfg.rl_config()
    if cfg.checkpoint_every is None:
        return rl
    explicit = dict(cfg.rl).get("checkpoint_every")
    if explicit is not None and explicit != cfg.checkpoint_every:
        raise ConfigError(f"--checkpoint-every {cfg.checkpoint_every} contradicts --rl.checkpoint_every {explicit}")
    return attrs.evolve(rl, checkpoint_every=cfg.checkpoint_every)


def build_learner(dims: tuple[int, int, int], rl: RLConfig, seed: int, device: torch.device) -> Learner:
    d, s, k = dims
    generator = torch.Generator().manual_seed(seed)
    policy = PolicyNet(d, s, k, hidden=rl.hidden, head_hidden=rl.head_hidden, masked_logit=rl.masked_logit,
                       generator=generator, trunk=rl.policy, op_prior=rl.op_prior).to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=rl.lr, eps=rl.adam_eps, weight_decay=rl.weight_decay,
                                  fused=device.type == "cuda")
    return Learner(policy, optimizer, Normalisers.initial(d))


def policy_dims(vec: VecEnv) -> tuple[int, int, int]:
    trainer = vec.envs[0].trainer
    s, k = len(trainer.state.slots), len(trainer.rules.catalogue.germinable)
    return obs_dim(s, k), s, k


class PPORun:
    """The driver's program for a PPO learning run: one step is one batch (rollout + update)."""

    FORMAT: ClassVar[str] = FORMAT
    RESUMABLE: ClassVar[tuple[str, ...]] = PPO_RESUMABLE
    CSVS: ClassVar[tuple[tuple[str, str], ...]] = ((PPO_CSV, "update"), (EPISODES_CSV, "update"))
    LIVE_PROGRESS: ClassVar[bool] = False  # a batch runs N episodes at once: no per-epoch progress line
    unit, periodic = "updates", "update-*.pt"

    def __init__(self, cfg: RunConfig, data: list[TaskData], devices: list[torch.device], run_dir: RunDirectory,
                 record: dict[str, Any], stop_after: int | None = None, ranks: Ranks | None = None,
                 user: UserParts | None = None) -> None:
        self.cfg, self.rl, self.ranks = cfg, rl_config(cfg), ranks or Ranks()
        self.user = user.trainer_kwargs() if user is not None else {}  # every env's Trainer grows the user's host
        self.data, self.devices, self.run_dir, self.record = data, devices, run_dir, record
        self.run_id = record["run_id"]
        self.keep_checkpoints = self.rl.keep_checkpoints
        self.total = self.rl.updates if stop_after is None else min(self.rl.updates, stop_after)
        self.epochs = cfg.epochs or data[0].preset.epochs
        self.policy_device = devices[0]
        self.clock = time.perf_counter()  # rl.run_ended's wall seconds: this process's
        # --compile (RunConfig.compile, issue 17); absent from a config that predates it: eager.
        self.compile_mode = update_compile_mode(cfg.compile, self.policy_device)
        check_world(self.rl.n_envs, self.rl.minibatch_envs, self.ranks)
        # (D, S, K): the observation and action sizes follow the host's slots and the catalogue, the user's too
        self.dims = policy_dims(VecEnv(cfg, data, devices, n_envs=1, batch=0, epochs=self.epochs, user=self.user))
        self.learner = build_learner(self.dims, self.rl, cfg.seed, self.policy_device)

    @staticmethod
    def devices(device: torch.device) -> list[torch.device]:
        """Env i runs on cuda:(i mod G) for the G local GPUs; one CPU device otherwise."""
        if device.type == "cuda" and device.index is None:
            return [torch.device(f"cuda:{g}") for g in range(torch.cuda.device_count())]
        return [device]

    @classmethod
    def open(cls, cfg: RunConfig, data: list[TaskData], devices: list[torch.device], run_dir: RunDirectory,
             record: dict[str, Any], stop_after: int | None, ranks: Ranks | None = None,
             user: UserParts | None = None) -> "PPORun":
        return cls(cfg, data, devices, run_dir, record, stop_after, ranks, user)

    @staticmethod
    def read_summary(run_dir: Path) -> dict[str, Any] | None:
        """rl_summary.json of a finished run (None: not finished, or killed before writing it)."""
        path = run_dir / "rl_summary.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    @property
    def steps(self) -> int:
        return self.learner.batch

    def _vec(self, batch: int) -> VecEnv:
        """This rank's envs of batch `batch` (all of them on one rank)."""
        return VecEnv(self.cfg, self.data, self.devices, n_envs=self.rl.n_envs, batch=batch, epochs=self.epochs,
                      indices=self.ranks.shard(range(self.rl.n_envs)), user=self.user)

    def started(self, resumed: ResumePoint | None) -> RLRunStarted:
        d, s, k = self.dims
        digest = hashlib.sha256(json.dumps(self.record["config"], sort_keys=True).encode()).hexdigest()[:12]
        return RLRunStarted(run_seed=self.cfg.seed, task=self.cfg.task, reward_mode=self.rl.reward_mode,
                            epochs=self.epochs, n_envs=self.rl.n_envs, n_slots=s, n_blueprints=k, obs_dim=d,
                            updates=self.rl.updates, config_hash=digest,
                            resumed_from=str(resumed.path) if resumed is not None else None)

    def step(self, hub: TelemetryHub) -> list[Save]:
        """One batch; `update-NNNNN` every `checkpoint_every` updates and at the last, `best` when the
        rolling mean final accuracy is the best yet."""
        learner, rl = self.learner, self.rl
        self.one_batch(hub)
        saves = []
        if learner.batch % rl.checkpoint_every == 0 or learner.batch == self.total:
            saves.append(Save(f"update-{learner.batch:05d}"))
        if rolling_best([h["final_acc"] for h in learner.history], rl.best_window):
            saves.append(Save("best", latest=False))  # its optimizer state belongs to its weights
        return saves

    def one_batch(self, hub: TelemetryHub) -> None:
        learner, rl, b = self.learner, self.rl, self.learner.batch
        vec = self._vec(b)
        acting = learner.policy if self.policy_device.type == "cpu" else _cpu_copy(learner.policy)
        buffer, stats = collect_rollout(vec, acting, learner.norms.obs, rl, batch_generator(self.cfg.seed, b,
                                                                                            ACTING_STREAM))
        buffer, stats, facts = gather_rollout(self.ranks, buffer, stats, env_facts(vec))  # the whole batch
        for env, step, reason in stats.truncations:
            hub.emit(EnvTruncated(env_index=env, step=step, reason=reason, rank=env_rank(self.ranks, rl.n_envs, env)))
        started = time.perf_counter()
        result, learner.norms = ppo_update(learner.policy, learner.optimizer, buffer, learner.norms, rl,
                                           update=b, shuffle=batch_generator(self.cfg.seed, b, SHUFFLE_STREAM),
                                           device=self.policy_device, ranks=self.ranks,
                                           compile_mode=self.compile_mode)
        learner.batch += 1
        learner.episodes += len(facts)
        learner.env_steps += int(buffer.valid.sum())
        hub.emit(rollout_event(b, facts, buffer, stats))
        hub.emit(self._update_event(result, stats.wall_s, time.perf_counter() - started))
        learner.anomalies, anomalies = check_update(learner.anomalies, result, buffer, rl, update=learner.batch)
        for event in anomalies:
            hub.emit(event)
        returns = episode_returns(buffer.reward, buffer.valid)
        learner.history.append({"update": learner.batch, "final_acc": float(buffer.final_acc.mean()),
                                "return": math.fsum(returns) / len(returns), "applied": result.applied})
        rows = episode_rows(learner.batch, facts, returns, buffer.final_acc.tolist())
        learner.episode_log.extend({k: row[k] for k in LOGGED} for row in rows)
        if self.ranks.main:  # every rank holds the same numbers; one writes them
            self.append_ppo_row(result, batch_means(facts))
            append_rows(self.run_dir.path / EPISODES_CSV, EPISODE_COLUMNS, rows)
            save_rollout_record(self.run_dir.path, learner.batch, vec, buffer, result, rl)

    def append_ppo_row(self, r: UpdateResult, means: dict[str, float]) -> None:
        """One `ppo.csv` row per update: what `esper-run report` draws (it reads no events); `means` are the
        batch's per-episode means (`episodes.batch_means`)."""
        learner, heads, d = self.learner, r.diagnostics["heads"], r.diagnostics
        row = {"update": learner.batch, "episodes": learner.episodes, "env_steps": learner.env_steps,
               "mean_return": learner.history[-1]["return"], "mean_final_acc": learner.history[-1]["final_acc"],
               **{f"entropy_{h}": heads[h].get("entropy", 0.0) for h in HEAD_NAMES},
               "approx_kl": d.get("joint_approx_kl", 0.0), "clip_frac_op": heads["op"].get("clip_frac", 0.0),
               "explained_variance": r.rollout_explained_variance, "value_loss": d.get("value_loss", 0.0),
               "policy_loss": d.get("total_policy_loss", 0.0), "early_stopped": int(r.stop_epoch is not None),
               **means}
        append_rows(self.run_dir.path / PPO_CSV, PPO_COLUMNS, [row])

    def _update_event(self, r: UpdateResult, rollout_s: float, update_s: float) -> PPOUpdate:
        d = r.diagnostics
        heads = d["heads"]
        return PPOUpdate(
            update=self.learner.batch, episodes=self.learner.episodes, env_steps=self.learner.env_steps,
            lr=self.rl.lr, entropy_coef=r.entropy_coef, loss=d.get("loss", 0.0),
            policy_loss=d.get("total_policy_loss", 0.0), value_loss=d.get("value_loss", 0.0),
            entropy=heads["op"].get("entropy", 0.0), approx_kl=d.get("joint_approx_kl", 0.0),
            clip_frac=heads["op"].get("clip_frac", 0.0), explained_variance=r.rollout_explained_variance,
            grad_norm=r.grad_norm_mean, early_stopped=r.stop_epoch is not None, wall_s=rollout_s + update_s,
            heads=heads,
            extra={"applied": r.applied, "epochs_done": r.epochs_done, "minibatches_done": r.minibatches_done,
                   "stop_epoch": r.stop_epoch, "stop_minibatch": r.stop_minibatch,
                   "initial_logratio_max": r.initial_logratio_max, "grad_norm_max": r.grad_norm_max,
                   "value_mean": d.get("value_mean"), "value_std": d.get("value_std"),
                   "return_mean": r.return_mean, "return_std": r.return_std,
                   "advantage_mean": r.advantage_mean, "advantage_std": r.advantage_std,
                   "reward_scale": r.reward_scale, "reward_clip_frac": r.clip_frac_reward,
                   "obs_norm_count": float(self.learner.norms.obs.count), "rollout_s": rollout_s,
                   "update_s": update_s})

    def digest(self) -> str:
        """The learner every rank must hold bit for bit: policy, optimizer moments, normalisers, counters."""
        learner = self.learner
        state = [*learner.policy.state_dict().values(),
                 *(t for s in learner.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)),
                 learner.norms.obs.mean, learner.norms.obs.var, learner.norms.reward.var]
        return tensor_digest(state) + digest([learner.batch, learner.episodes, learner.env_steps])

    # -- checkpoints --------------------------------------------------------------------------------

    def payload(self, seq: int) -> dict[str, Any]:
        """A copy: the driver keeps the last boundary's payload while the next batch trains in place."""
        learner = self.learner
        return copy.deepcopy({
            "format": FORMAT, "schema_version": 1, "versions": versions(),
            "run": {"run_id": self.run_id, "controller": "ppo", "config": self.record["config"],
                    "data_source": self.record["data_source"],
                    **({"user": self.record["user"]} if "user" in self.record else {})},
            "progress": {"epoch": learner.batch, "update": learner.batch, "seq": seq},
            "controller": {
                "policy": learner.policy.state_dict(), "optimizer": learner.optimizer.state_dict(),
                "norms": codec.encode(learner.norms),
                "counters": {"batch": learner.batch, "episodes": learner.episodes, "env_steps": learner.env_steps},
                "anomalies": codec.encode(learner.anomalies), "history": learner.history,
                "episode_log": learner.episode_log,
                "rng": {"run_seed": self.cfg.seed},
            },
        })

    def restore(self, data: dict[str, Any]) -> None:
        try:
            c = data["controller"]
            self.learner.policy.load_state_dict(c["policy"])
            self.learner.optimizer.load_state_dict(c["optimizer"])
            self.learner.norms = codec.decode(Normalisers, c["norms"])
            counters = c["counters"]
            self.learner.batch, self.learner.episodes = int(counters["batch"]), int(counters["episodes"])
            self.learner.env_steps = int(counters["env_steps"])
            self.learner.anomalies = codec.decode(AnomalyState, c["anomalies"])
            self.learner.history = list(c["history"])
            self.learner.episode_log = list(c.get("episode_log", []))  # absent before episodes.csv: log anew
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint does not match this run ({type(exc).__name__}: {exc})") from exc
        if self.learner.batch > self.rl.updates:
            raise ConfigError(f"--episodes {self.rl.episodes} makes {self.rl.updates} updates, below the "
                              f"{self.learner.batch} already done")

    def save_policy(self) -> Path:
        """The trained policy and the observation normaliser it acts with, for `--policy RUN_DIR`."""
        d, s, k = self.dims
        return write_atomic(self.run_dir.path / POLICY_FILE, {
            "format": "esper.policy", "schema_version": 1, "task": self.cfg.task,
            "dims": {"obs_dim": d, "n_slots": s, "n_blueprints": k},
            "rl": codec.encode(self.rl), "policy": self.learner.policy.state_dict(),
            "obs_norm": codec.encode(self.learner.norms.obs)})

    def closing(self, status: str, error: BaseException | None) -> list[Save]:
        """An interrupt mid-batch checkpoints the last finished batch (the driver put the learner back
        to it, the start included) and the partial one is re-run on resume (docs/rl.md §1.6)."""
        if isinstance(error, KeyboardInterrupt) or (isinstance(error, PolicyDiverged) and self.learner.batch > 0):
            return [Save(f"update-{self.learner.batch:05d}")]
        return []

    def last_events(self, status: str, error: BaseException | None) -> list[Event]:
        last = self.learner.history[-1] if self.learner.history else {}
        return [RLRunEnded(status=status, updates=self.learner.batch, episodes=self.learner.episodes,
                           env_steps=self.learner.env_steps, final_return=last.get("return"),
                           final_acc=last.get("final_acc"), wall_s=time.perf_counter() - self.clock,
                           run_dir=str(self.run_dir.path))]

    def non_finite(self) -> str | None:
        """The last update's mean return and final accuracy that are not finite, e.g. "return=nan"."""
        last = self.learner.history[-1] if self.learner.history else {}
        bad = [f"{k}={last[k]}" for k in ("return", "final_acc") if k in last and not math.isfinite(last[k])]
        return ", ".join(bad) or None

    def summary(self, status: str, dropped: dict[str, int]) -> dict[str, Any] | None:
        """policy.pt and rl_summary.json of a finished (ok) run; None otherwise."""
        if status != "ok":
            return None
        self.save_policy()
        h = self.learner.history
        summary = {"run_id": self.run_id, "task": self.cfg.task, "controller": "ppo", "updates": self.learner.batch,
                   "episodes": self.learner.episodes, "env_steps": self.learner.env_steps,
                   "first_updates": h[:3], "last_updates": h[-3:], "history": h,
                   "return_correlation": return_correlation(self.learner.episode_log),
                   "run_dir": str(self.run_dir.path)}
        self.run_dir.path.joinpath("rl_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return summary

    def print_summary(self, summary: dict[str, Any] | None) -> None:
        if summary is None:
            return
        first, last = summary["first_updates"], summary["last_updates"]

        def mean(rows: list[dict[str, Any]], key: str) -> float:
            return sum(r[key] for r in rows) / max(len(rows), 1)

        print(f"ppo: {summary['updates']} updates, {summary['episodes']} episodes, {summary['env_steps']} env-epochs")
        print(f"  mean episode return: first updates {mean(first, 'return'):+.3f}, last {mean(last, 'return'):+.3f}")
        print(f"  mean final accuracy: first updates {mean(first, 'final_acc'):.4f}, "
              f"last {mean(last, 'final_acc'):.4f}")
        if "return_correlation" in summary:  # absent from an rl_summary.json written before it
            print(f"  {describe_correlation(summary['return_correlation'])}")
        print(f"  policy: {summary['run_dir']}/{POLICY_FILE}")


def rolling_best(history: list[float], window: int) -> bool:
    """True when the mean of the last `window` values is higher than every earlier window's mean."""
    if len(history) < window:
        return False
    means = [sum(history[i - window:i]) / window for i in range(window, len(history) + 1)]
    return means[-1] > max(means[:-1], default=float("-inf"))


def _cpu_copy(policy: PolicyNet) -> PolicyNet:
    return copy.deepcopy(policy).to("cpu").float()
