"""The PPO minibatch loop's typed outcome (esper/shell/rl/update.py): how a loop's minibatches add up
to what `UpdateResult` reports, rows picked alike from every field, diagnostics read per head."""

import attrs
import torch

from esper.core.ppo import PPOBatch, PPODiagnostics
from esper.core.sampling import MaskTensors
from esper.shell.rl.update import HEAD_NAMES, LoopOutcome, MinibatchOutcome, UpdateData, diagnostics_dict


def _diagnostics(mark: float) -> PPODiagnostics:
    """Every field distinct: head h of a per-head field i is mark + 10·i + h, scalar j is mark + 100 + j."""
    values = {}
    for i, f in enumerate(attrs.fields(PPODiagnostics)):
        if f.name in PPODiagnostics.HEAD_FIELDS:
            values[f.name] = mark + 10.0 * i + torch.arange(4.0)
        else:
            values[f.name] = torch.tensor(mark + 100.0 + i)
    return PPODiagnostics(**values)


def _outcome(grad_norm: float, dev: float = 0.0, loss: float = 0.5, mark: float = 0.0) -> MinibatchOutcome:
    return MinibatchOutcome(joint_kl=0.01, loss=loss, grad_norm=grad_norm, max_abs_ratio_dev=dev,
                            diagnostics=_diagnostics(mark))


def test_a_completed_loop_reports_every_grad_norm_and_the_last_diagnostics():
    steps = (_outcome(1.0, dev=0.25), _outcome(3.0, dev=0.5), _outcome(2.0, mark=7.0))
    loop = LoopOutcome(steps, steps=3, epochs_done=1)
    assert loop.finite and loop.grad_norms == (1.0, 3.0, 2.0)
    assert loop.initial_logratio_max == 0.25  # the first minibatch's: before any step moved the policy
    assert loop.diagnostics is steps[-1].diagnostics


def test_a_non_finite_minibatch_ends_the_loop_unapplied_and_its_norm_is_left_out():
    steps = (_outcome(1.0), _outcome(2.0), _outcome(float("inf"), loss=float("nan"), mark=3.0))
    loop = LoopOutcome(steps, steps=2, epochs_done=0)
    assert not loop.finite and not steps[-1].finite
    assert loop.grad_norms == (1.0, 2.0)
    assert loop.diagnostics is steps[-1].diagnostics  # what the broken minibatch saw is still reported


def test_an_empty_loop_reports_nothing_measured():
    loop = LoopOutcome((), steps=0, epochs_done=0)
    assert loop.finite and loop.grad_norms == () and loop.initial_logratio_max == 0.0 and loop.diagnostics is None


def test_diagnostics_read_back_per_head_and_per_scalar():
    d = diagnostics_dict(_diagnostics(0.0))
    fields = [f.name for f in attrs.fields(PPODiagnostics)]
    for i, name in enumerate(fields):
        if name in PPODiagnostics.HEAD_FIELDS:
            assert [d["heads"][h][name] for h in HEAD_NAMES] == [10.0 * i + h for h in range(4)]
        else:
            assert d[name] == 100.0 + i
    assert list(d) == ["heads", *(n for n in fields if n not in PPODiagnostics.HEAD_FIELDS)]
    assert diagnostics_dict(None) == {"heads": {h: {} for h in HEAD_NAMES}}


def test_rows_pick_the_same_envs_from_every_field():
    n, e = 5, 3
    env = torch.arange(float(n)).reshape(n, 1)  # each field's row i carries the value i

    def field(*shape: int) -> torch.Tensor:
        return env.reshape(n, *([1] * (len(shape) + 1))).expand(n, e, *shape).clone()

    data = UpdateData(obs=field(7), actions=field(4).long(),
                      masks=MaskTensors(op=field(4) > 1, slot=field(4, 3) > 1, blueprint=field(3, 2) > 1,
                                        tempo=field(3) > 1),
                      batch=PPOBatch(logp_old=field(4), value_old=field(), relevance=field(4), valid=field(),
                                     advantages=field(), returns=field()))
    rows = data.rows(torch.tensor([3, 1]))
    assert rows.obs[:, 0, 0].tolist() == [3.0, 1.0] and rows.actions[:, 0, 0].tolist() == [3, 1]
    assert rows.masks.tempo[:, 0, 0].tolist() == [True, False]
    assert all(getattr(rows.batch, f.name).reshape(2, -1)[:, 0].tolist() == [3.0, 1.0]
               for f in attrs.fields(PPOBatch))
