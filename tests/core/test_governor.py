"""The governor's detection rules (docs/runtime.md §3.1, §10 item 5) on crafted windows."""

import json
import math

import pytest

from esper.core import codec
from esper.core.errors import ConfigError
from esper.core.events import GovernorAnomaly
from esper.core.governor import (
    GovernorConfig,
    GovernorState,
    Verdict,
    VerdictKind,
    check,
    lr_scale,
    record_rollback,
    rollbacks_exhausted,
)

CIFAR = GovernorConfig.for_classes(10)  # RG = ln 10 ≈ 2.303
GPT2 = GovernorConfig.for_classes(50_257)  # RG ≈ 10.825
STEADY = GovernorState(window=(1.0, 1.1, 0.9, 1.0, 1.0))  # μ = 1.0, σ ≈ 0.0632


def run(losses, cfg=CIFAR, state=None, train=None):
    state = state or GovernorState()
    verdicts = []
    for loss in losses:
        state, verdict = check(state, loss if train is None else train, loss, cfg)
        verdicts.append(verdict)
    return state, verdicts


def test_defaults_and_random_guess_loss_from_the_task():
    cfg = CIFAR
    assert (cfg.window, cfg.warmup, cfg.sigma_k, cfg.mean_multiplier, cfg.consecutive, cfg.rg_tolerance,
            cfg.rg_learned_fraction, cfg.max_rollbacks, cfg.lr_factor_on_rollback) == (
        20, 5, 6.0, 3.0, 3, 0.065, 0.6, 3, 0.5)
    assert CIFAR.random_guess_loss == pytest.approx(2.303, abs=1e-3)
    assert GPT2.random_guess_loss == pytest.approx(10.825, abs=1e-3)
    assert GovernorConfig.for_classes(256).random_guess_loss == pytest.approx(5.545, abs=1e-3)
    bad_values = ({"random_guess_loss": math.nan}, {"random_guess_loss": 2.3, "warmup": 0},
                  {"random_guess_loss": 2.3, "window": 3},
                  {"random_guess_loss": 2.3, "lr_factor_on_rollback": 0})
    for bad in bad_values:
        with pytest.raises(ConfigError, match="governor config"):
            GovernorConfig(**bad)


NON_FINITE = [(math.nan, 1.0), (1.0, math.inf), (-math.inf, 1.0), (1.0, math.nan)]


@pytest.mark.parametrize(("train", "val"), NON_FINITE)
def test_non_finite_panics_at_once_even_in_warmup(train, val):
    for state in (GovernorState(), STEADY):
        after, verdict = check(state, train, val, CIFAR)
        assert verdict.is_panic and verdict.reason == "non_finite"
        assert after == state  # nothing appended


def test_warmup_accepts_anything_finite():
    state, verdicts = run([1.0, 50.0, 2.303, 0.01, 1000.0])
    assert all(v.is_ok for v in verdicts)
    assert state.window == (1.0, 50.0, 2.303, 0.01, 1000.0)
    # Rules 3–4 start with the 6th loss.
    _, verdict = check(GovernorState(window=(1.0,) * 5), 30.0, 30.0, CIFAR)
    assert verdict.kind == VerdictKind.ANOMALY


def test_random_guess_uses_the_tasks_rg():
    learned = GovernorState(window=(1.0,) * 5)  # μ = 1.0 < 0.6·RG for both tasks
    _, verdict = check(learned, 2.30, 2.30, CIFAR)
    assert verdict.is_panic and verdict.reason == "random_guess"
    _, verdict = check(learned, 2.30, 2.30, GPT2)  # 2.30 is far from GPT-2's 10.825
    assert not (verdict.is_panic and verdict.reason == "random_guess")
    _, verdict = check(GovernorState(window=(3.0,) * 5), 10.8, 10.8, GPT2)
    assert verdict.is_panic and verdict.reason == "random_guess"
    # Within tolerance only: |val − RG| must be < 0.065·RG (≈ 0.150 for CIFAR).
    _, verdict = check(learned, 2.1, 2.1, CIFAR)
    assert verdict.is_ok
    # Not learned yet (μ ≥ 0.6·RG ≈ 1.382): a loss near RG is normal early training.
    _, verdict = check(GovernorState(window=(2.2,) * 5), 2.3, 2.3, CIFAR)
    assert verdict.is_ok


def test_anomaly_needs_both_sigma_and_mean_conditions():
    # > μ + 6σ (≈ 1.38) but < 3μ: accepted.
    state, verdict = check(STEADY, 1.5, 1.5, CIFAR)
    assert verdict.is_ok and state.window[-1] == 1.5
    # > 3μ but < μ + 6σ: a noisy window (μ = 1.0, σ ≈ 0.98) accepts 4.0.
    noisy = GovernorState(window=(0.2, 0.2, 0.2, 2.2, 2.2))
    state, verdict = check(noisy, 4.0, 4.0, GovernorConfig(random_guess_loss=10.0))
    assert verdict.is_ok and state.window[-1] == 4.0
    # Both: anomaly, k = 1, and the loss is not appended.
    state, verdict = check(STEADY, 3.5, 3.5, CIFAR)
    assert verdict.kind == VerdictKind.ANOMALY and verdict.consecutive == 1
    assert state.window == STEADY.window and state.consecutive == 1
    assert verdict.mean == pytest.approx(1.0) and verdict.std == pytest.approx(math.sqrt(0.004))
    assert verdict.threshold == pytest.approx(3.0)


def test_three_consecutive_anomalies_panic_with_divergence_and_a_normal_loss_resets():
    state, verdicts = run([3.5, 3.5, 3.5], state=STEADY)
    assert [v.kind for v in verdicts] == [VerdictKind.ANOMALY, VerdictKind.ANOMALY, VerdictKind.PANIC]
    assert verdicts[-1].reason == "divergence" and verdicts[-1].consecutive == 3
    assert state.consecutive == 3 and state.window == STEADY.window
    state, verdicts = run([3.5, 3.5, 1.0, 3.5], state=STEADY)
    assert [v.consecutive for v in verdicts] == [1, 2, 0, 1]
    assert state.window == (*STEADY.window, 1.0)


def test_window_keeps_the_last_accepted_losses():
    state, _ = run([1.0 + i / 1000 for i in range(30)])
    assert len(state.window) == 20 and state.window[0] == pytest.approx(1.010)


def test_anomaly_event_carries_the_window_statistics():
    _, verdict = check(STEADY, 3.5, 3.5, CIFAR)
    assert verdict.anomaly_event(epoch=16, loss=3.5) == GovernorAnomaly(
        epoch=16, loss=3.5, mean=verdict.mean, std=verdict.std, threshold=verdict.threshold, consecutive=1)
    with pytest.raises(ValueError, match="no window statistics"):
        Verdict.ok().anomaly_event(epoch=1, loss=1.0)


def test_rollback_accounting():
    state = GovernorState(window=STEADY.window, consecutive=3)
    assert not rollbacks_exhausted(state, CIFAR)
    for k in range(1, 4):
        state = record_rollback(state)
        assert state.rollbacks == k and state.consecutive == 0 and state.window == STEADY.window
    assert rollbacks_exhausted(state, CIFAR)  # the 4th panic aborts
    assert lr_scale(state, CIFAR) == 0.125
    assert rollbacks_exhausted(GovernorState(), GovernorConfig.for_classes(10, max_rollbacks=0))


def test_round_trips_through_json():
    _, anomaly = check(STEADY, 3.5, 3.5, CIFAR)
    values = (CIFAR, GPT2, GovernorState(), STEADY, GovernorState(window=(1.5,), consecutive=2, rollbacks=1),
              Verdict.ok(), anomaly, Verdict(kind="panic", reason="non_finite"))
    for value in values:
        assert codec.decode(type(value), json.loads(json.dumps(codec.encode(value)))) == value
