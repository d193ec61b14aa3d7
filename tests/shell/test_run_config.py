"""`--config` files and numeric values (docs/runtime.md §6.3, §6.4): every file that is not a run
config — unknown tables or keys, wrong top-level or value types, a directory, undecodable bytes — is
one ConfigError naming the file and what is wrong (exit 2); learning rates must be finite and > 0;
every valid config still loads."""

import json
from pathlib import Path

import attrs
import pytest

from esper.core.errors import ConfigError
from esper.core.rl_config import RLConfig
from esper.shell.cli import main
from esper.shell.run_config import RunConfig, load_config_file, resolve, section_fields

OLD_RUN = Path(__file__).parents[1] / "fixtures" / "old_run"


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("foo.json", '{"foo": [1, 2, 3]}', "unknown table [foo]"),
    ("list.json", "[1, 2, 3]", "got a JSON list"),
    ("string.json", '"train"', "got a JSON str"),
    ("typo.json", '{"train": {"epochz": 3}}', "unknown key train.epochz (did you mean epochs?)"),
    ("wrong_section.toml", "[optim]\nepochs = 3\n", "unknown key optim.epochs (it belongs in [train])"),
    ("not_a_table.json", '{"train": [1, 2]}', "[train] must be a table"),
    ("not_a_table.toml", "train = 3\n", "[train] must be a table"),
    ("wrong_type.toml", '[train]\nepochs = "many"\n', "train.epochs must be int"),
    ("bool_int.json", '{"train": {"epochs": true}}', "train.epochs must be int"),
    ("list_items.toml", "[train]\nslots = [1, 2]\n", "train.slots must be a list of str"),
    ("record_extra.json", '{"config": {"train": {}}, "extra": 1}', "unknown key extra"),
    ("record_config.json", '{"config": [1]}', "config must be an object of tables"),
    ("bad.json", "{not json", "not valid JSON"),
    ("bad.toml", "[train\n", "not valid TOML"),
    ("latin1.toml", b"[train]\ntask = \"\xe9\"\n", "not valid TOML"),
])
def test_a_file_that_is_not_a_run_config_is_one_error_naming_the_file_and_key(tmp_path, name, text, needle):
    path = _write(tmp_path, name, text)
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    message = str(caught.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_a_directory_or_a_missing_file_is_one_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config_file(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "absent.toml")


def test_an_unreadable_file_is_one_error(tmp_path, monkeypatch):
    # chmod 0 does not stop root (CI runs as root), so the read itself is made to fail as it would.
    path = _write(tmp_path, "locked.toml", "[train]\nepochs = 3\n")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ConfigError, match="cannot be read \\(Permission denied\\)"):
        load_config_file(path)


def test_every_valid_form_still_loads(tmp_path):
    toml = _write(tmp_path, "c.toml", '[train]\nepochs = 3\nslots = ["r1c1"]\n[optim]\nhost_lr = 1\n')
    assert load_config_file(toml) == {"epochs": 3, "slots": ("r1c1",), "host_lr": 1.0}
    tables = _write(tmp_path, "c.json", json.dumps({"train": {"epochs": 3}, "data": {"train_size": 64}}))
    assert load_config_file(tables) == {"epochs": 3, "train_size": 64}
    cfg = RunConfig(epochs=7, host_lr=0.05, slots=("r1c1",))
    record = _write(tmp_path, "config.json", json.dumps(
        {"run_id": "r", "config": cfg.to_sections(), "data_source": {}, "versions": {}}))
    assert resolve(load_config_file(record), {}) == cfg
    assert resolve(load_config_file(OLD_RUN / "config.json"), {}).epochs is not None
    assert load_config_file(_write(tmp_path, "empty.toml", "")) == {}


def test_the_tables_are_the_config_sections():
    written = {s: tuple(t) for s, t in RunConfig().to_sections().items()}
    known = {s: tuple(t) for s, t in section_fields().items()}
    # [rl] is one RunConfig field holding the resolved RLConfig: its table has every RLConfig field.
    assert written.pop("rl") == tuple(f.name for f in attrs.fields(RLConfig))
    assert known.pop("rl") == ("rl",)
    assert written == known


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 0.0, -0.1])
def test_learning_rates_must_be_finite_and_positive(value):
    for key in ("host_lr", "seed_lr"):
        with pytest.raises(ConfigError, match=f"{key} must be a finite number > 0"):
            RunConfig(**{key: value})


def test_a_non_finite_lr_in_a_file_is_refused(tmp_path):
    path = _write(tmp_path, "inf.toml", "[optim]\nhost_lr = inf\n")
    with pytest.raises(ConfigError, match="host_lr must be a finite number"):
        resolve(load_config_file(path), {})


@pytest.mark.parametrize("argv", [
    ["--config", "{dir}/foo.json"],
    ["--config", "{dir}/list.json"],
    ["--config", "{dir}"],
    ["--host-lr", "inf"],
    ["--seed-lr", "nan"],
])
def test_the_cli_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv):
    _write(tmp_path, "foo.json", '{"foo": [1, 2, 3]}')
    _write(tmp_path, "list.json", "[1, 2, 3]")
    out = tmp_path / "run"
    args = [a.format(dir=tmp_path) for a in argv]
    assert main(["train", "--epochs", "1", "--no-progress", "--out", str(out), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esper-run: error:"), lines
    assert not out.exists()
