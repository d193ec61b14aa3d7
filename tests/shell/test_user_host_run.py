"""Grow your own model (docs/lifecycle.md §7.4, §6.6): a Trainer on a user's nn.Sequential MLP over flat
inputs, with a user blueprint, germinates and fossilizes that blueprint under the heuristic; its model
checkpoint records import paths (never code) and re-loads in a fresh process; a bad path is one line.

The factory and the blueprint live at module level here, as a user's would in their own module.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import torch
from torch import nn

from esper.core import codec
from esper.core.catalogue import catalogue_for
from esper.core.config import LifecycleConfig
from esper.core.errors import ConfigError
from esper.core.events import SeedFossilized, SeedGerminated
from esper.core.heuristic import HeuristicConfig
from esper.core.tasks import task_preset
from esper.shell.blueprint_check import register
from esper.shell.checkpoint import CheckpointError, load_model_checkpoint, model_checkpoint, save_model_checkpoint
from esper.shell.data import DataSource, TaskData
from esper.shell.nets.dropout import dropout_generators
from esper.shell.nets.host_base import Host
from esper.shell.nets.stack_host import host_from_stack
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer
from esper.shell.user_code import HostFactory, ImportPathError, resolve
from tests.shell.test_blueprint_check import Scale  # the user blueprint: δ(h) = h ⊙ w, w = 0 at birth

D_IN, EPOCHS = 6, 8
FACTORY = HostFactory(path=f"{__name__}:mlp_stack", kwargs={"width": 16}, slots={"hidden": 1})


def mlp_stack(generator: torch.Generator, width: int) -> nn.Sequential:
    """The user's network: a plain MLP (default init, drawn from the global RNG the trainer seeds)."""
    return nn.Sequential(nn.Linear(D_IN, width), nn.ReLU(), nn.Dropout(0.1), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 2))



def build_scale(d: int) -> nn.Module:
    return Scale(d)


def scale_params(d: int) -> int:
    return d


def blobs(n_train: int = 256, n_heldout: int = 128) -> TaskData:
    """Two Gaussian blobs in D_IN dimensions as (N, D) float inputs: a flat task needs no transform."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n_train + n_heldout,), generator=gen)
    inputs = torch.randn(n_train + n_heldout, D_IN, generator=gen) + (2.0 * labels - 1.0)[:, None]
    preset = attrs.evolve(task_preset("synth-images"), name="blobs", topology="mlp", input_shape=(D_IN,),
                          n_classes=2, train_size=n_train, heldout_size=n_heldout, batch_size=32,
                          eval_batch_size=64, epochs=EPOCHS, augment_padding=0, hflip=False, mean=None, std=None)
    source = DataSource(preset="blobs", kind="procedural", id_or_path="test", fingerprint="blobs", sha256="s",
                        n_train=n_train, n_heldout=n_heldout, subset=False)
    return TaskData(preset=preset, source=source, device=torch.device("cpu"), train_inputs=inputs[:n_train],
                    train_labels=labels[:n_train], heldout_inputs=inputs[n_train:], heldout_labels=labels[n_train:])


def user_catalogue():
    sample = torch.randn(8, D_IN, generator=torch.Generator().manual_seed(1))
    probe = host_from_stack(mlp_stack(torch.Generator(), 16), {"hidden": 1}, sample=sample)
    return register(catalogue_for("mlp"), "scale", build_scale, scale_params, host=probe, sample=sample)


def growth_trainer() -> Trainer:
    """The real heuristic, gates relaxed (as tests/shell/dist/test_data_parallel.py) so a seed germinates at
    epoch 1 and fossilizes within EPOCHS tiny epochs."""
    cfg = RunConfig(seed=0, epochs=EPOCHS, batch_size=32, germination="early", min_germinate_epoch=1)
    lifecycle = LifecycleConfig.for_horizon(EPOCHS, min_training_epochs=1, min_training_improvement=-1.0,
                                            min_blending_epochs=1, min_fossilize_contribution=0.0,
                                            tempo_choices=(1, 2, 3), default_tempo=2)
    trainer = Trainer(cfg, blobs(), torch.device("cpu"), lifecycle_config=lifecycle, host_factory=FACTORY,
                      catalogue=user_catalogue())
    trainer.heuristic_cfg = attrs.evolve(trainer.heuristic_cfg, blend_hurts=-1.0, shadow_hurts=-1.0,
                                         min_total_gain=-1.0)
    return trainer


@pytest.fixture(scope="module")
def grown() -> Iterator[tuple[Trainer, list]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one reduction order, whatever the machine; restored for the tests after these
    try:
        trainer = growth_trainer()
        events = [e for _ in range(EPOCHS) for e in trainer.run_epoch().events]
    finally:
        torch.set_num_threads(threads)
    yield trainer, events


def test_the_heuristic_germinates_and_fossilizes_the_user_blueprint_on_the_user_mlp(grown):
    trainer, events = grown
    assert trainer.model.topology == "mlp" and trainer.model.host.config.kind == "mlp"
    assert dropout_generators(trainer.model.host) == [trainer.dropout_gen]  # the run's stream, not the global RNG
    assert trainer.heuristic_cfg.rotation_for("mlp") == ("scale", "lora", "mlp", "norm")
    germinated = [e for e in events if isinstance(e, SeedGerminated)]
    assert germinated and germinated[0].blueprint == "scale"
    fossils = [e for e in events if isinstance(e, SeedFossilized)]
    assert fossils, [str(e) for e in events]
    assert trainer.state.slot(fossils[0].slot).seed.blueprint == "scale"


def test_the_host_is_a_function_of_the_run_seed():
    first, second = (FACTORY.build(torch.Generator().manual_seed(5), torch.zeros(2, D_IN)) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(),
                                                 strict=True))


def test_the_checkpoint_records_import_paths_and_reloads_in_a_fresh_process(grown, tmp_path):
    trainer, _ = grown
    data = model_checkpoint(trainer.model, trainer.state)
    assert data["host"]["name"] == "user"
    assert data["host"]["factory"]["path"] == f"{__name__}:mlp_stack"
    assert data["host"]["factory"]["kwargs"] == {"width": 16}
    assert data["blueprints"] == [{"name": "scale", "build": f"{__name__}:build_scale",
                                   "params": f"{__name__}:scale_params", "fits": "esper.core.catalogue:_positive"}]
    path = save_model_checkpoint(tmp_path / "model.pt", trainer.model, trainer.state)
    x = trainer.data.heldout_inputs[:16]
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(x)
    trainer.model.train()
    script = ("import sys, torch\nfrom esper.shell.checkpoint import load_model_checkpoint\n"
              "m = load_model_checkpoint(sys.argv[1]).model.eval()\n"
              "x = torch.load(sys.argv[2])\nwith torch.no_grad():\n    torch.save(m(x), sys.argv[3])\n")
    torch.save(x, tmp_path / "x.pt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), str(Path(__file__).parent)])}
    subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, env=env, timeout=120)
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)


def test_a_resumed_snapshot_rebuilds_the_user_host_and_blueprint(grown):
    trainer, _ = grown
    loaded = load_model_checkpoint(model_checkpoint(trainer.model, trainer.state))
    assert loaded.model.catalogue.names == trainer.model.catalogue.names
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(),
                                                 trainer.model.state_dict().values(), strict=True))


@pytest.mark.parametrize(("where", "path"), [("factory", "no_such_module_xyz:mlp_stack"),
                                             ("factory", f"{__name__}:no_such_function"),
                                             ("blueprint", "no_such_module_xyz:build_scale")])
def test_an_import_path_that_does_not_resolve_is_one_line(grown, where, path):
    trainer, _ = grown
    data = model_checkpoint(trainer.model, trainer.state)
    if where == "factory":
        data["host"]["factory"]["path"] = path
    else:
        data["blueprints"][0]["build"] = path
    with pytest.raises(CheckpointError) as caught:
        load_model_checkpoint(data)
    assert "\n" not in str(caught.value) and path in str(caught.value)


def test_a_blueprint_without_an_import_path_is_refused_before_training():
    catalogue = catalogue_for("mlp").with_blueprint("anon", lambda d: Scale(d), scale_params)
    with pytest.raises(ImportPathError, match="anon"):
        Trainer(RunConfig(seed=0, epochs=2), blobs(), torch.device("cpu"), host_factory=FACTORY, catalogue=catalogue)


def test_resolve_names_the_path_in_one_line():
    for bad in ("nocolon", "no_such_module_xyz:f", "os:no_such_thing"):
        with pytest.raises(ImportPathError) as caught:
            resolve(bad)
        assert bad in str(caught.value) and "\n" not in str(caught.value)


def test_user_blueprints_lead_the_rotation_and_leave_built_in_records_unchanged():
    cfg = HeuristicConfig(user_blueprints=("scale", "norm"))
    assert cfg.rotation_for("mlp") == ("scale", "norm", "lora", "mlp")
    assert cfg.rotation_for("cnn")[:3] == ("scale", "norm", "conv_light")
    assert "user_blueprints" not in codec.encode(HeuristicConfig())
    assert codec.decode(HeuristicConfig, codec.encode(cfg)) == cfg


def test_user_blueprint_names_are_checked_in_one_line():
    for bad in (("Bad",), ("noop",), ("scale", "scale")):
        with pytest.raises(ConfigError) as caught:
            HeuristicConfig(user_blueprints=bad)
        assert "user_blueprints" in str(caught.value) and "\n" not in str(caught.value)


def mlp_host(generator: torch.Generator, width: int) -> Host:
    """A factory that cuts its own host: no slots in the HostFactory."""
    return host_from_stack(mlp_stack(generator, width), {"hidden": 1}, sample=torch.zeros(2, D_IN))


def not_a_host(generator: torch.Generator) -> int:
    return 3


def test_a_factory_may_return_a_host_and_a_bare_stack_needs_slots():
    gen = torch.Generator().manual_seed(0)
    host = HostFactory(path=f"{__name__}:mlp_host", kwargs={"width": 8}).build(gen, torch.zeros(2, D_IN))
    assert [s.name for s in host.slot_specs] == ["hidden"] and host.slot_specs[0].dim == 8
    for factory, words in ((HostFactory(path=f"{__name__}:mlp_stack", kwargs={"width": 8}), "give its slots"),
                           (HostFactory(path=f"{__name__}:not_a_host"), "not a Host or a stack")):
        with pytest.raises(ConfigError, match=words):
            factory.build(gen, torch.zeros(2, D_IN))
    with pytest.raises(ConfigError, match=r"failed: TypeError: .*unexpected keyword") as caught:
        HostFactory(path=f"{__name__}:mlp_stack", kwargs={"depth": 2}).build(gen, torch.zeros(2, D_IN))
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="JSON"):
        HostFactory(path=f"{__name__}:mlp_stack", kwargs={"width": object()})


def test_a_factory_that_now_builds_another_host_is_one_line(grown):
    trainer, _ = grown
    data = model_checkpoint(trainer.model, trainer.state)
    data["host"]["factory"]["kwargs"] = {"width": 12}
    with pytest.raises(CheckpointError) as caught:
        load_model_checkpoint(data)
    assert "now builds another host" in str(caught.value) and "\n" not in str(caught.value)
