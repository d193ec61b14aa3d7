"""--compile (esper.shell.compiled): a compiled run decides as the eager one, and only a new model
structure compiles (never an alpha ramp or an lr change)."""

import attrs
import pytest
import torch

from esper.core.errors import ConfigError
from esper.shell.compiled import CompiledSteps, compile_count, resolve_compile
from esper.shell.data.loading import load_task
from esper.shell.dist import Ranks
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer
from tests.shell.dist.test_data_parallel import GROWTH, growth_trainer

EPOCHS = 7  # GROWTH germinates at epoch 1 and fossilizes at epoch 5 (TRAINING, BLENDING ×2, PROBATIONARY)
GRAPHS_PER_STRUCTURE = 3  # the train step, the gradient-norm sums, the validation pass
# Inductor reorders float32 reductions (fused conv/BatchNorm epilogues, other summation orders): each
# summed loss differs by O(n·eps) ≈ 1e-6 relative and SGD carries it on; 7 epochs measured ≤ 2e-6.
# 1e-4 leaves a 50× margin and is still far below any gate's resolution (accuracy steps of 1/128).
LOSS_RTOL = 1e-4


@pytest.fixture(autouse=True)
def _no_compiled_structures():
    """Each test compiles its structures itself (the cache is process-wide)."""
    CompiledSteps.clear_cache()


def _trainer(device: str = "cpu"):
    """GROWTH's trainer (cosine lr: the lr changes every epoch) on `device`, eager until `steps` is set."""
    cfg = attrs.evolve(GROWTH, compile="off", lr_schedule="cosine")
    cpu = growth_trainer(cfg)
    if device == "cpu":
        return cpu
    data = load_task(cfg.task, device=device, train_size=cfg.train_size, val_size=cfg.val_size)
    trainer = Trainer(cfg, data, torch.device(device), lifecycle_config=cpu.lifecycle_cfg)
    trainer.heuristic_cfg = cpu.heuristic_cfg
    return trainer


def _run(steps: CompiledSteps | None, epochs: int = EPOCHS, device: str = "cpu"):
    """(trainer, per epoch: action, reason, train loss, val loss, recompiles, lr, the structure it
    trained, (stage, alpha) per slot after it)."""
    trainer = _trainer(device)
    trainer.steps = steps
    rows = []
    for _ in range(epochs):
        structure = trainer.model.structure_key()
        result = trainer.run_epoch()
        rows.append((str(result.action), result.reason, result.train_loss, result.val_loss,
                     result.metrics.recompiles, result.metrics.lr_host, structure,
                     tuple((s.stage.name, s.seed.alpha if s.seed else 0.0) for s in trainer.state.slots)))
    return trainer, rows


def _stages(rows) -> set[str]:
    return {stage for row in rows for stage, _ in row[7]}


def test_resolve_compile_auto_is_reduce_overhead_on_cuda_only_and_refuses_ranks():
    assert resolve_compile("auto", torch.device("cpu")) is None
    assert resolve_compile("auto", torch.device("cuda")) == "reduce-overhead"
    assert resolve_compile("off", torch.device("cuda")) is None
    assert resolve_compile("default", torch.device("cpu")) == "default"
    two = Ranks(rank=0, world=2)
    assert resolve_compile("auto", torch.device("cuda"), two) is None
    with pytest.raises(ConfigError, match="needs one rank"):
        resolve_compile("reduce-overhead", torch.device("cuda"), two)
    with pytest.raises(ConfigError, match="needs one rank"):
        RunConfig(compile="default", nproc=2)


def test_recompiles_equal_the_structures_and_no_alpha_ramp_or_lr_change_recompiles():
    """Dynamo's eager backend: the same graphs and guards as inductor, without the code generation."""
    before = compile_count()
    trainer, rows = _run(CompiledSteps("default", backend="eager"))
    assert {"TRAINING", "BLENDING", "PROBATIONARY", "FOSSILIZED"} <= _stages(rows)
    structures = [row[6] for row in rows]
    new = [structures[i] not in structures[:i] for i in range(EPOCHS)]
    assert [row[4] for row in rows] == [GRAPHS_PER_STRUCTURE if n else 0 for n in new]
    assert sum(row[4] for row in rows) == compile_count() - before == GRAPHS_PER_STRUCTURE * len(set(structures))
    ramp = [i for i in range(2, EPOCHS) if rows[i - 2][7] != rows[i - 1][7] and structures[i] == structures[i - 1]]
    assert ramp and all(rows[i][4] == 0 for i in ramp)  # alphas or stages moved, the structure did not
    assert len({row[5] for row in rows}) > 1  # the lr changed too (cosine)
    snapshot_state = trainer.restore_snapshot(trainer.snapshot)  # a rollback's rebuilt model: same structure
    trainer.state = snapshot_state
    assert trainer.run_epoch().metrics.recompiles == 0


def test_reduce_overhead_copies_each_batch_into_one_static_buffer_and_matches_eager():
    steps = CompiledSteps("reduce-overhead", backend="eager")
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    first = steps.static_input(a, "x")
    pointer = first.data_ptr()
    second = steps.static_input(b, "x")
    assert second.data_ptr() == pointer and torch.equal(second, b)
    assert CompiledSteps("default").static_input(a, "x") is a
    _, eager = _run(None, epochs=2)
    _, compiled = _run(steps, epochs=2)
    assert [r[:4] for r in compiled] == [r[:4] for r in eager]  # the eager backend: bit for bit


@pytest.mark.slow  # inductor on CPU: ~3 min here (4 structures × 3 graphs, each 10–40 s to compile)
def test_an_inductor_compiled_run_makes_the_eager_runs_decisions_through_every_stage():
    _, eager = _run(None)
    _, compiled = _run(CompiledSteps("default"))
    assert {"TRAINING", "BLENDING", "PROBATIONARY", "FOSSILIZED"} <= _stages(eager)
    assert any(r[0].startswith("GERMINATE") for r in eager) and any(r[0].startswith("FOSSILIZE") for r in eager)
    assert [(r[0], r[1], r[7]) for r in compiled] == [(r[0], r[1], r[7]) for r in eager]
    for c, e in zip(compiled, eager, strict=True):
        assert c[2] == pytest.approx(e[2], rel=LOSS_RTOL) and c[3] == pytest.approx(e[3], rel=LOSS_RTOL)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_cuda_compiled_run_decides_as_eager_and_its_step_never_syncs(mode):
    _, eager = _run(None, device="cuda")
    trainer, compiled = _run(CompiledSteps(mode), device="cuda")
    assert [(r[0], r[1], r[7]) for r in compiled] == [(r[0], r[1], r[7]) for r in eager]
    for c, e in zip(compiled, eager, strict=True):  # TF32 and cuDNN's algorithms besides the reordering
        assert c[2] == pytest.approx(e[2], rel=1e-3) and c[3] == pytest.approx(e[3], rel=1e-3)
    assert sum(r[4] for r in compiled) == GRAPHS_PER_STRUCTURE * len({r[6] for r in compiled})
    steps, model = trainer.steps, trainer.model
    fns = steps.functions(model, ())
    x, y = torch.randn(64, 3, 32, 32, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device→host read in the step raises
    try:
        for _ in range(3):
            steps.begin_step()
            loss, _ = fns["train"](model, steps.static_input(x, "x"), steps.static_input(y, "y"), None)
            loss.backward()
            fns["grads"](list(model.host.parameters()), [], loss.new_zeros(()))
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_the_diagnostic_profile_trains_eagerly_and_validates_compiled():
    """The isolation watch hooks the seeds' forward each epoch: those train steps stay eager."""
    def run(steps):
        cfg = attrs.evolve(GROWTH, compile="off", profile="diagnostic")
        trainer = growth_trainer(cfg)
        trainer.steps = steps
        return [(r.train_loss, r.val_loss, r.metrics.recompiles) for r in (trainer.run_epoch() for _ in range(2))]

    eager, compiled = run(None), run(CompiledSteps("default", backend="eager"))
    assert [r[:2] for r in compiled] == [r[:2] for r in eager]
    assert [r[2] for r in compiled] == [1, 1]  # validation only: the initial structure, then TRAINING's
