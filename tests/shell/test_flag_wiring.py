"""docs/runtime.md §6.6: every `train` flag maps to one config key and a non-default value changes it;
precedence is defaults < --config file < flags; a 1-epoch run reads every key it should. The `--rl.FIELD`
flags (one per RLConfig field) are checked field by field in tests/shell/rl/test_rl_config_knobs.py."""

import json

import attrs
import pytest
import torch

from esper.core.errors import ConfigError
from esper.core.rl_config import RLConfig
from esper.shell.cli import config_from_args, main, parser
from esper.shell.run_config import FLAGS, RunConfig, field_names, load_config_file, resolve

# A non-default command-line value per key, and the config value it must produce.
VALUES = {
    "task": ("fashion-mnist", "fashion-mnist"), "controller": ("static", "static"), "epochs": ("7", 7),
    "host": ("tiny", "tiny"),
    "seed": ("3", 3), "device": ("cpu", "cpu"), "slots": ("mid,late", ("mid", "late")),
    "max_seeds": ("2", 2), "static_seeds": ("late:conv_light", ("late:conv_light",)),
    "precision": ("bf16", "bf16"), "compile": ("reduce-overhead", "reduce-overhead"),
    "data_dir": ("/data", "/data"), "data_seed": ("5", 5),
    "train_size": ("100", 100), "val_size": ("50", 50), "train_batches": ("9", 9), "tokenizer": ("bpe", "bpe"),
    "data_budget": ("1.5M", 1_572_864), "data_workers": ("3", 3),
    "batch_size": ("32", 32), "optimizer": ("adamw", "adamw"), "host_lr": ("0.5", 0.5), "seed_lr": ("0.25", 0.25),
    "lr_schedule": ("cosine", "cosine"),
    "host_width": ("12", 12), "plateau_epochs": ("4", 4), "min_germinate_epoch": ("2", 2),
    "germination": ("early", "early"),
    "max_rollbacks": ("1", 1), "telemetry_level": ("debug", "debug"), "profile": ("research", "research"),
    "events": ("/tmp/e.jsonl", "/tmp/e.jsonl"), "checkpoint_every": ("2", 2), "keep_checkpoints": ("1", 1),
    "nproc": ("2", 2), "dist_timeout": ("60", 60.0),
    "n_envs": ("4", 4), "episodes": ("16", 16), "reward": ("sparse", "sparse"), "policy": ("runs/x", "runs/x"),
    "policy_act": ("sample", "sample"),
    "wandb_project": ("growth", "growth"), "wandb_entity": ("lab", "lab"),
    "text_column": ("body", "body"),
    "dataset": ("user/pets", "user/pets"), "image_column": ("photo", "photo"), "label_column": ("kind", "kind"),
    "split": ("train,test", "train,test"), "image_size": ("48", 48), "channels": ("1", 1),
}


def _cfg(*argv: str) -> RunConfig:
    return config_from_args(parser().parse_args(["train", *argv]))


def test_every_config_key_has_exactly_the_flags_listed():
    keys = {flag.key for flag in FLAGS}
    assert keys | {"rl"} == set(field_names())  # `rl` holds the --rl.FIELD settings


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_rl_field_has_its_rl_flag(command):
    sub = next(a for a in parser()._actions if a.dest == "command").choices[command]
    options = {o for action in sub._actions for o in action.option_strings if o.startswith("--rl.")}
    assert options == {f"--rl.{f.name}" for f in attrs.fields(RLConfig)}


@pytest.mark.parametrize("flag", FLAGS, ids=lambda f: f.options[0])
def test_each_flag_changes_its_key(flag):
    default = getattr(RunConfig(), flag.key)
    if flag.parse is None:
        argv, expected = [flag.options[0]], flag.value
    else:
        text, expected = VALUES[flag.key]
        argv = [flag.options[0], text]
    if flag.key == "static_seeds":
        argv += ["--controller", "static"]
    if flag.key == "policy":
        argv += ["--controller", "ppo"]
    if flag.key == "policy_act":
        argv += ["--controller", "ppo", "--policy", "runs/x"]
    if flag.key in ("image_column", "image_size", "channels"):
        argv += ["--task", "images"]
    cfg = _cfg(*argv)
    assert getattr(cfg, flag.key) == expected != default
    needed = ("controller", "task") if flag.key in ("image_column", "image_size", "channels") else (
        ("controller", "policy") if flag.key == "policy_act" else ("controller",))
    others = {k: getattr(cfg, k) for k in field_names() if k not in (flag.key, *needed)}
    assert others == {k: getattr(RunConfig(), k) for k in others}, "a flag changed another key"


def test_precedence_defaults_file_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nepochs = 9\nseed = 4\n[heuristic]\nplateau_epochs = 6\n")
    cfg = _cfg("--config", str(toml), "--seed", "8")
    assert (cfg.epochs, cfg.seed, cfg.plateau_epochs, cfg.max_seeds) == (9, 8, 6, 0)


class Recording:
    """A read-recording proxy of a RunConfig (§6.6 (b))."""

    def __init__(self, cfg: RunConfig) -> None:
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name: str):
        if name in field_names():
            self.read.add(name)
        return getattr(self._cfg, name)


# Keys the trainer does not read: the run loop, telemetry and data loading consume them (the e2e
# and telemetry tests cover them); the PPO keys are read by the PPO runner (tests/shell/rl); the
# driver makes `deterministic` a process setting (tests/shell/test_process.py).
NOT_TRAINER_KEYS = {"device", "data_dir", "data_seed", "train_size", "val_size", "tokenizer", "telemetry_level",
                    "data_budget", "data_workers",  # data loading's (tests/shell/data/test_streamed_path.py)
                    "profile", "events", "tensorboard", "progress", "checkpoint_every", "keep_checkpoints",
                    "task", "n_envs", "episodes", "reward", "policy", "policy_act", "report", "deterministic", "rl",
                    "nproc", "dist_timeout",  # the driver's (tests/shell/dist)
                    "wandb", "wandb_project", "wandb_entity",
                    "text_column",  # --task text's loader (tests/shell/data/test_text_files.py)
                    "dataset", "image_column", "label_column", "split", "image_size", "channels"}  # --task images


@pytest.mark.parametrize("controller", ["heuristic", "static"])
def test_a_one_epoch_run_reads_every_trainer_key(controller):
    from esper.shell.data.loading import load_task
    from esper.shell.trainer import Trainer

    cfg = Recording(RunConfig(controller=controller, epochs=1, batch_size=64))
    trainer = Trainer(cfg, load_task("synth-images", device="cpu", train_size=128, val_size=64),
                      torch.device("cpu"))
    trainer.run_epoch()
    assert set(field_names()) - NOT_TRAINER_KEYS - cfg.read == set()


@pytest.mark.parametrize("rl", [{}, {"lr": 1e-3, "potentials": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.0, 0.0, 0.0)}])
def test_run_config_round_trips_through_its_sections(tmp_path, rl):
    cfg = RunConfig(epochs=3, slots=("mid",), host_lr=0.1, n_envs=4, reward="sparse", rl=rl)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": cfg.to_sections()}))
    assert resolve(load_config_file(path), {}) == cfg
    assert cfg.to_sections()["rl"] == {k: list(v) if isinstance(v, tuple) else v
                                       for k, v in attrs.asdict(cfg.rl_config()).items()}  # the resolved RLConfig


def test_rl_settings_precedence_defaults_file_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("[ppo]\nn_envs = 2\n[rl]\nlr = 0.01\ngamma = 0.9\n"
                    "potentials = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0, 0, 0]\n")
    rl = _cfg("--config", str(toml), "--rl.lr", "0.02").rl_config()
    assert (rl.lr, rl.gamma, rl.n_envs, rl.clip_eps) == (0.02, 0.9, 2, RLConfig().clip_eps)
    assert rl.potentials == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.0, 0.0, 0.0)


def test_the_older_ppo_flags_are_aliases_of_their_rl_fields(tmp_path):
    assert _cfg("--n-envs", "4") == _cfg("--rl.n_envs", "4") == _cfg("--n-envs", "4", "--rl.n_envs", "4")
    assert _cfg("--reward", "sparse").rl_config() == _cfg("--rl.reward_mode", "sparse").rl_config()
    assert _cfg("--episodes", "16").rl_config().episodes == _cfg("--rl.episodes", "16").rl_config().episodes == 16
    with pytest.raises(ConfigError, match=r"n_envs \(4\) and rl.n_envs \(2\) are one setting"):
        _cfg("--n-envs", "4", "--rl.n_envs", "2")
    toml = tmp_path / "run.toml"
    toml.write_text("[ppo]\nreward = \"sparse\"\n[rl]\nreward_mode = \"minimal\"\n")
    with pytest.raises(ConfigError, match=r"reward \('sparse'\) and rl.reward_mode \('minimal'\)"):
        _cfg("--config", str(toml))
    toml.write_text("[rl]\nn_envs = 4\n")  # across sources the flag wins, whichever spelling
    assert _cfg("--config", str(toml), "--n-envs", "2").rl_config().n_envs == 2
    toml.write_text("[ppo]\nn_envs = 4\n")
    assert _cfg("--config", str(toml), "--rl.n_envs", "2").rl_config().n_envs == 2


@pytest.mark.parametrize(("argv", "message"), [
    (["--rl.lr", "abc"], "argument --rl.lr: rl.lr must be float, got 'abc'"),
    (["--rl.lr", "nan"], "rl.lr must be finite"),
    (["--rl.hidden", "1.5"], "rl.hidden must be int"),
    (["--rl.reward_mode", "bogus"], "rl.reward_mode must be one of shaped, sparse, minimal"),
    (["--rl.lr", "-1"], "rl config: lr must be > 0"),
    (["--rl.potentials", "0,1"], "potentials needs one value per stage"),
    (["--rl.n_envs", "6"], "n_envs (6) must be a multiple of the minibatch size"),
    (["--rl.nosuch", "1"], "unrecognized arguments: --rl.nosuch"),
])
def test_a_bad_rl_flag_is_one_line_and_exit_2(argv, message, capsys):
    try:
        code = main(["train", "--controller", "ppo", *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize(("table", "message"), [
    ("lr = \"fast\"", "rl.lr must be float, got 'fast'"),
    ("hidden = true", "rl.hidden must be int"),
    ("potentials = 1.0", "rl.potentials must be a list of numbers"),
    ("gama = 0.9", "unknown key rl.gama (did you mean gamma?)"),
    ("gamma = 2.0", "gamma must be in (0, 1]"),
])
def test_a_bad_rl_table_is_one_line_and_exit_2(tmp_path, table, message, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text(f"[rl]\n{table}\n")
    assert main(["train", "--config", str(toml)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_static_seeds_are_fossils_from_epoch_zero():
    from esper.core.stages import Stage
    from esper.shell.data.loading import load_task
    from esper.shell.trainer import Trainer

    cfg = RunConfig(controller="static", epochs=1, batch_size=64, static_seeds=("late:conv_light",))
    trainer = Trainer(cfg, load_task("synth-images", device="cpu", train_size=128, val_size=64), torch.device("cpu"))
    late = trainer.state.slot("late")
    assert late.stage == Stage.FOSSILIZED and late.seed.blueprint == "conv_light" and late.seed.alpha == 1.0
    assert trainer.model.param_counts().fossilized == 9 * 32 * 32 + 2 * 32
    assert "fossil:late" in [g["name"] for g in trainer.optimizer.param_groups]
    result = trainer.run_epoch()
    assert trainer.state.slot("late").stage == Stage.FOSSILIZED and result.reason == "static"


def test_heuristic_germination_and_g2_threshold_come_from_the_preset_unless_flagged():
    from esper.shell.data.loading import load_task
    from esper.shell.trainer import Trainer

    data = load_task("synth-images", device="cpu", train_size=128, val_size=64)
    default = Trainer(RunConfig(epochs=1), data, torch.device("cpu"))
    assert (default.heuristic_cfg.germination, default.heuristic_cfg.min_germinate_epoch) == ("plateau", 5)
    assert default.lifecycle_cfg.min_training_improvement == 0.005
    early = attrs.evolve(data, preset=attrs.evolve(data.preset, germination="early", min_germinate_epoch=2,
                                                   min_training_improvement=-0.005))
    trainer = Trainer(RunConfig(epochs=1), early, torch.device("cpu"))
    assert (trainer.heuristic_cfg.germination, trainer.heuristic_cfg.min_germinate_epoch) == ("early", 2)
    assert trainer.lifecycle_cfg.min_training_improvement == -0.005
    flagged = Trainer(RunConfig(epochs=1, germination="plateau", min_germinate_epoch=0), early, torch.device("cpu"))
    assert (flagged.heuristic_cfg.germination, flagged.heuristic_cfg.min_germinate_epoch) == ("plateau", 0)


@pytest.mark.parametrize("command", ["train", "compare", "evaluate", "report", "tasks"])
def test_every_command_s_help_prints_every_one_of_its_flags(command, capsys):
    """`esper-run COMMAND --help` exits 0 and lists its flags, their help text verbatim ("10 %" once crashed
    argparse's %-formatting of `train --help` and `compare --help` with a traceback)."""
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    options = [a for a in parser()._subparsers._group_actions[0].choices[command]._actions if a.option_strings]
    assert options
    for action in options:
        assert action.option_strings[0] in shown
    if command == "train":
        split = next(f for f in FLAGS if f.key == "split")
        assert " ".join(split.help.split()) in shown
