"""`esper-run train --controller ppo`: learn when to grow, top to bottom (docs/rl.md §6, §8, §9).

    data (one read-only copy per device) → run directory, config.json → policy, Adam, normalisers
    → for each batch b < U: VecEnv(b) → collect_rollout → ppo_update → telemetry, anomaly checks
                            → checkpoint every `checkpoint_every` updates (atomic; latest.json)
    → policy.pt (the trained policy for `--policy`), final checkpoint, summary

Resume restores the policy, optimizer, normalisers, counters and telemetry state, and continues at
the next batch; every generator of a batch derives from (run seed, batch), so the continuation is
the uninterrupted run's, bit for bit on CPU.
"""

import copy
import csv
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from esper.core import codec
from esper.core.events import CheckpointSaved, EnvTruncated, PPOUpdate, RLRunStarted, RolloutDone
from esper.core.observation import obs_dim
from esper.core.rl_config import RLConfig
from esper.shell.checkpoint import CheckpointError, write_atomic
from esper.shell.nets.policy import PolicyNet
from esper.shell.rl.anomaly import AnomalyState, PolicyDiverged, check_update
from esper.shell.rl.collect import collect_rollout
from esper.shell.rl.envs import ACTING_STREAM, SHUFFLE_STREAM, VecEnv, batch_generator
from esper.shell.rl.record import save_rollout_record
from esper.shell.rl.rollout import COMPONENTS, RolloutBuffer
from esper.shell.rl.update import HEAD_NAMES, Normalisers, UpdateResult, ppo_update
from esper.shell.run_checkpoint import load_run_checkpoint, save_run_checkpoint, versions
from esper.shell.run_config import RunConfig, resolve
from esper.shell.telemetry import RunDirectory, make_run_id, open_hub
from esper.shell.telemetry.rundir import tag_failed_run

FORMAT = "esper.rl_run"
POLICY_FILE = "policy.pt"
PPO_CSV = "ppo.csv"
# What a PPO resume may change: `episodes` may grow; where and how it reports (docs/rl.md §8).
PPO_RESUMABLE = ("episodes", "device", "telemetry_level", "profile", "events", "tensorboard", "progress", "report")
PPO_COLUMNS = ("update", "episodes", "env_steps", "mean_return", "mean_final_acc", "entropy_op", "entropy_slot",
               "entropy_blueprint", "entropy_tempo", "approx_kl", "clip_frac_op", "explained_variance", "value_loss",
               "policy_loss", "early_stopped")


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


def rl_config(cfg: RunConfig) -> RLConfig:
    overrides: dict[str, Any] = {"n_envs": cfg.n_envs, "reward_mode": cfg.reward}
    if cfg.episodes is not None:
        overrides["episodes"] = cfg.episodes
    return RLConfig(**overrides)


def build_learner(dims: tuple[int, int, int], rl: RLConfig, seed: int, device: torch.device) -> Learner:
    d, s, k = dims
    generator = torch.Generator().manual_seed(seed)
    policy = PolicyNet(d, s, k, hidden=rl.hidden, head_hidden=rl.head_hidden, masked_logit=rl.masked_logit,
                       generator=generator).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=rl.lr, eps=rl.adam_eps, fused=device.type == "cuda")
    return Learner(policy, optimizer, Normalisers.initial(d))


def policy_dims(vec: VecEnv) -> tuple[int, int, int]:
    trainer = vec.envs[0].trainer
    s, k = len(trainer.state.slots), len(trainer.rules.catalogue.germinable)
    return obs_dim(s, k), s, k


class PPORun:
    def __init__(self, cfg: RunConfig, data: list[Any], devices: list[torch.device], run_dir: RunDirectory,
                 run_id: str, record: dict[str, Any], start_seq: int = 0) -> None:
        self.cfg, self.rl = cfg, rl_config(cfg)
        self.data, self.devices, self.run_dir, self.run_id, self.record = data, devices, run_dir, run_id, record
        self.epochs = cfg.epochs or data[0].preset.epochs
        self.policy_device = devices[0]
        self.dims = policy_dims(VecEnv(cfg, data, devices, n_envs=1, batch=0, epochs=self.epochs))  # (D, S, K)
        self.learner = build_learner(self.dims, self.rl, cfg.seed, self.policy_device)
        self.hub = open_hub(run_id, run_dir, level=cfg.telemetry_level, profile=cfg.profile, progress=None,
                            tensorboard=cfg.tensorboard, events_copy=cfg.events, start_seq=start_seq)

    def _vec(self, batch: int) -> VecEnv:
        return VecEnv(self.cfg, self.data, self.devices, n_envs=self.rl.n_envs, batch=batch, epochs=self.epochs)

    def started_event(self, resumed_from: str | None) -> RLRunStarted:
        d, s, k = self.dims
        digest = hashlib.sha256(json.dumps(self.record["config"], sort_keys=True).encode()).hexdigest()[:12]
        return RLRunStarted(run_seed=self.cfg.seed, task=self.cfg.task, reward_mode=self.rl.reward_mode,
                            epochs=self.epochs, n_envs=self.rl.n_envs, n_slots=s, n_blueprints=k, obs_dim=d,
                            updates=self.rl.updates, config_hash=digest, resumed_from=resumed_from)

    def run(self, stop_after: int | None = None) -> dict[str, Any]:
        """Batches up to U (or `stop_after` updates in total: tests and interrupted runs).

        The learner changes only at a batch's end, so an interrupt mid-batch checkpoints the last
        finished batch and the partial one is re-run on resume (docs/rl.md §1.6)."""
        learner, rl = self.learner, self.rl
        last = rl.updates if stop_after is None else min(rl.updates, stop_after)
        try:
            while learner.batch < last:
                self.one_batch()
                if learner.batch % rl.checkpoint_every == 0 or learner.batch == last:
                    self.checkpoint(f"update-{learner.batch:05d}")
                if rolling_best([h["final_acc"] for h in learner.history], rl.best_window):
                    self.checkpoint("best", latest=False)
        except (KeyboardInterrupt, PolicyDiverged):
            if learner.batch > 0:
                self.checkpoint(f"update-{learner.batch:05d}")
            raise
        self.save_policy()
        summary = self.summary()
        self.run_dir.path.joinpath("rl_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return summary

    def one_batch(self) -> None:
        learner, rl, b = self.learner, self.rl, self.learner.batch
        vec = self._vec(b)
        acting = learner.policy if self.policy_device.type == "cpu" else _cpu_copy(learner.policy)
        buffer, stats = collect_rollout(vec, acting, learner.norms.obs, rl, batch_generator(self.cfg.seed, b,
                                                                                            ACTING_STREAM))
        for env, step, reason in stats.truncations:
            self.hub.emit(EnvTruncated(env_index=env, step=step, reason=reason))
        started = time.perf_counter()
        result, learner.norms = ppo_update(learner.policy, learner.optimizer, buffer, learner.norms, rl,
                                           update=b, shuffle=batch_generator(self.cfg.seed, b, SHUFFLE_STREAM),
                                           device=self.policy_device)
        learner.batch += 1
        learner.episodes += len(vec)
        learner.env_steps += int(buffer.valid.sum())
        self.hub.emit(_rollout_event(b, vec, buffer, stats))
        self.hub.emit(self._update_event(result, stats.wall_s, time.perf_counter() - started))
        learner.anomalies, anomalies = check_update(learner.anomalies, result, buffer, rl, update=learner.batch)
        for event in anomalies:
            self.hub.emit(event)
        valid = buffer.valid > 0
        learner.history.append({"update": learner.batch, "final_acc": float(buffer.final_acc.mean()),
                                "return": float((buffer.reward * valid).sum(1).mean()),
                                "applied": result.applied})
        self.append_ppo_row(result)
        save_rollout_record(self.run_dir.path, learner.batch, vec, buffer, result, rl)

    def append_ppo_row(self, r: UpdateResult) -> None:
        """One `ppo.csv` row per update: what `esper-run report` draws (it reads no events)."""
        learner, heads, d = self.learner, r.diagnostics["heads"], r.diagnostics
        row = {"update": learner.batch, "episodes": learner.episodes, "env_steps": learner.env_steps,
               "mean_return": learner.history[-1]["return"], "mean_final_acc": learner.history[-1]["final_acc"],
               **{f"entropy_{h}": heads[h].get("entropy", 0.0) for h in HEAD_NAMES},
               "approx_kl": d.get("joint_approx_kl", 0.0), "clip_frac_op": heads["op"].get("clip_frac", 0.0),
               "explained_variance": r.rollout_explained_variance, "value_loss": d.get("value_loss", 0.0),
               "policy_loss": d.get("total_policy_loss", 0.0), "early_stopped": int(r.stop_epoch is not None)}
        path = self.run_dir.path / PPO_CSV
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=PPO_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)

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

    # -- checkpoints --------------------------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        learner = self.learner
        return {
            "format": FORMAT, "schema_version": 1, "versions": versions(),
            "run": {"run_id": self.run_id, "controller": "ppo", "config": self.record["config"],
                    "data_source": self.record["data_source"]},
            "progress": {"epoch": learner.batch, "update": learner.batch, "seq": self.hub.next_seq},
            "controller": {
                "policy": learner.policy.state_dict(), "optimizer": learner.optimizer.state_dict(),
                "norms": codec.encode(learner.norms),
                "counters": {"batch": learner.batch, "episodes": learner.episodes, "env_steps": learner.env_steps},
                "anomalies": codec.encode(learner.anomalies), "history": learner.history,
                "rng": {"run_seed": self.cfg.seed},
            },
        }

    def checkpoint(self, name: str, latest: bool = True) -> Path:
        """A complete checkpoint; `latest` points latest.json at it (not for `best`, which is a side copy
        whose optimizer state belongs to its weights)."""
        started = time.perf_counter()
        self.hub.flush()
        folder = self.run_dir.path / "checkpoints"
        if latest:
            path = save_run_checkpoint(folder, name, self.payload(), self.rl.keep_checkpoints, pattern="update-*.pt")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            path = write_atomic(folder / f"{name}.pt", self.payload())
        self.hub.emit(CheckpointSaved(path=str(path), epoch=self.learner.batch, bytes=path.stat().st_size,
                                      seconds=time.perf_counter() - started))
        return path

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
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint does not match this run ({type(exc).__name__}: {exc})") from exc

    def save_policy(self) -> Path:
        """The trained policy and the observation normaliser it acts with, for `--policy RUN_DIR`."""
        d, s, k = self.dims
        return write_atomic(self.run_dir.path / POLICY_FILE, {
            "format": "esper.policy", "schema_version": 1, "task": self.cfg.task,
            "dims": {"obs_dim": d, "n_slots": s, "n_blueprints": k},
            "rl": codec.encode(self.rl), "policy": self.learner.policy.state_dict(),
            "obs_norm": codec.encode(self.learner.norms.obs)})

    def summary(self) -> dict[str, Any]:
        h = self.learner.history
        return {"run_id": self.run_id, "task": self.cfg.task, "controller": "ppo", "updates": self.learner.batch,
                "episodes": self.learner.episodes, "env_steps": self.learner.env_steps,
                "first_updates": h[:3], "last_updates": h[-3:], "history": h, "run_dir": str(self.run_dir.path)}

    def close(self) -> None:
        self.hub.close()
        self.run_dir.close()


def rolling_best(history: list[float], window: int) -> bool:
    """True when the mean of the last `window` values is higher than every earlier window's mean."""
    if len(history) < window:
        return False
    means = [sum(history[i - window:i]) / window for i in range(window, len(history) + 1)]
    return means[-1] > max(means[:-1], default=float("-inf"))


def _cpu_copy(policy: PolicyNet) -> PolicyNet:
    return copy.deepcopy(policy).to("cpu").float()


def _rollout_event(batch: int, vec: VecEnv, buffer: RolloutBuffer, stats: Any) -> RolloutDone:
    valid = buffer.valid > 0
    comps = buffer.components[valid]
    counts = [env.trainer.records for env in vec]

    def fates(fate: str) -> tuple[int, ...]:
        return tuple(sum(1 for r in recs if r.fate == fate) for recs in counts)

    share = [float(env.trainer.model.param_counts().fossilized) / max(env.trainer.model.host_params, 1)
             for env in vec]
    return RolloutDone(
        batch=batch, final_acc=tuple(buffer.final_acc.tolist()),
        raw_return=tuple((buffer.reward * valid).sum(1).tolist()), kept_steps=tuple(buffer.kept_steps().tolist()),
        truncated=tuple(buffer.cut), rollbacks=tuple(env.trainer.governor.rollbacks for env in vec),
        germinations=tuple(len(recs) for recs in counts), fossilizations=fates("fossilized"),
        culls=fates("culled"), op_counts=stats.op_counts, blueprint_counts=stats.blueprint_counts,
        reward_components={c: float(comps[:, j].mean()) if len(comps) else 0.0 for j, c in enumerate(COMPONENTS)},
        seed_param_share=sum(share) / len(share), wall_s=stats.wall_s)


def load_rl_checkpoint(target: Path) -> tuple[Path, dict[str, Any]]:
    path, data = load_run_checkpoint(target, expected_format=FORMAT)
    return path, data


def make_ppo_run_id(cfg: RunConfig) -> str:
    return make_run_id(cfg.task, "ppo", cfg.seed)


def train_ppo(cfg: RunConfig, *, out: str | None = None, resume: str | None = None,
              stop_after: int | None = None) -> dict[str, Any]:
    """Learn a policy (or continue learning one); returns the run's summary dict."""
    from esper.shell.run import cut_back, load_data, merge_resume, resolve_device  # run.py imports us lazily

    resumed: tuple[Path, dict[str, Any]] | None = None
    if resume is not None:
        resumed = load_rl_checkpoint(Path(resume))
        saved = resolve({k: v for s in resumed[1]["run"]["config"].values() for k, v in s.items()}, {})
        cfg = merge_resume(saved, cfg, PPO_RESUMABLE)
    devices = _devices(resolve_device(cfg.device))
    data = [load_data(cfg, d) for d in devices]
    start_seq = 0
    if resumed is not None:
        start_seq = int(resumed[1]["progress"]["seq"])
        cut_back(resumed[0].parent.parent, int(resumed[1]["progress"]["update"]), start_seq)
        _cut_ppo_csv(resumed[0].parent.parent / PPO_CSV, int(resumed[1]["progress"]["update"]))
        run_id, run_dir = resumed[1]["run"]["run_id"], RunDirectory(resumed[0].parent.parent, resume=True)
        record = {"run_id": run_id, "config": cfg.to_sections(), "data_source": resumed[1]["run"]["data_source"],
                  "versions": versions()}
    else:
        run_id = make_ppo_run_id(cfg)
        run_dir = RunDirectory(out or f"runs/{run_id}")
        record = {"run_id": run_id, "config": cfg.to_sections(), "data_source": codec.encode(data[0].source),
                  "versions": versions()}
        run_dir.write_config(record)
    run = PPORun(cfg, data, devices, run_dir, run_id, record, start_seq)
    try:
        if resumed is not None:
            run.restore(resumed[1])
        run.hub.emit(run.started_event(str(resumed[0]) if resumed else None))
        summary = run.run(stop_after)
    except Exception as exc:
        tag_failed_run(exc, run_dir.path)
        raise
    finally:
        run.close()
    if cfg.report:
        from esper.shell.run import draw_report

        draw_report(run_dir.path)
    _print_summary(summary)
    return summary


def _cut_ppo_csv(path: Path, update: int) -> None:
    """Drop the rows of updates after the checkpoint (they are re-run)."""
    if not path.exists():
        return
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=PPO_COLUMNS)
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["update"]) <= update)


def _devices(device: torch.device) -> list[torch.device]:
    """Env i runs on cuda:(i mod G) for the G local GPUs; one CPU device otherwise."""
    if device.type == "cuda" and device.index is None:
        return [torch.device(f"cuda:{g}") for g in range(torch.cuda.device_count())]
    return [device]


def _print_summary(summary: dict[str, Any]) -> None:
    first, last = summary["first_updates"], summary["last_updates"]

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return sum(r[key] for r in rows) / max(len(rows), 1)

    print(f"ppo: {summary['updates']} updates, {summary['episodes']} episodes, {summary['env_steps']} env-epochs")
    print(f"  mean episode return: first updates {mean(first, 'return'):+.3f}, last {mean(last, 'return'):+.3f}")
    print(f"  mean final accuracy: first updates {mean(first, 'final_acc'):.4f}, last {mean(last, 'final_acc'):.4f}")
    print(f"  policy: {summary['run_dir']}/{POLICY_FILE}")
