"""The slow science tests' margins (tests/e2e/science_margins.py) on fabricated numbers, in the default suite:
each check passes where the README's words hold and fails where they do not; and the thread fixture leaks nothing."""

import statistics

import pytest
import torch

from tests.e2e.conftest import held_torch_threads
from tests.e2e.science_margins import NOISE_K, assert_growth_claim, assert_learns

# The README's "Does growth pay?" table (final val acc, seeds 0/1/2) and its verdicts.
FASHION = {"static": [0.8539, 0.8409, 0.8440], "heuristic": [0.8691, 0.8707, 0.8703]}  # p = 0.025, real
SYNTH = {"static": [0.7360, 0.7225, 0.7235], "heuristic": [0.7540, 0.8010, 0.7235]}  # p = 0.288, within noise


def test_the_readme_growth_numbers_carry_the_readme_verdicts():
    fashion = assert_growth_claim(FASHION["heuristic"], FASHION["static"], "real")
    synth = assert_growth_claim(SYNTH["heuristic"], SYNTH["static"], "within noise")
    assert fashion.p == pytest.approx(0.025, abs=5e-4)
    assert synth.p == pytest.approx(0.288, abs=5e-4)


def test_a_gain_within_noise_fails_a_real_claim_and_a_real_gain_fails_a_noise_claim():
    with pytest.raises(AssertionError, match="says 'real'"):
        assert_growth_claim(SYNTH["heuristic"], SYNTH["static"], "real")
    with pytest.raises(AssertionError, match="says 'within noise'"):
        assert_growth_claim(FASHION["heuristic"], FASHION["static"], "within noise")


def test_a_significant_loss_fails_either_claim():
    for claim in ("real", "within noise"):
        with pytest.raises(AssertionError, match="does not pay"):
            assert_growth_claim(FASHION["static"], FASHION["heuristic"], claim)


def test_an_unknown_claim_is_an_error():
    with pytest.raises(ValueError, match="claim must be"):
        assert_growth_claim(FASHION["heuristic"], FASHION["static"], "pays")


QUIET_START = [0.000, 0.010, -0.010, 0.000, 0.005, -0.005]  # std 0.0071
NOISY_START = [-0.150, 0.150, -0.120, 0.130, -0.080, 0.058]  # std 0.131, same mean -0.002
RISEN_END = [0.09, 0.10, 0.08, 0.095, 0.09, 0.103]  # mean 0.093, as the README's last 6 updates


def test_a_rise_well_above_the_first_windows_spread_learns():
    margin = assert_learns([*QUIET_START, *[0.05] * 18, *RISEN_END], window=6)
    assert margin.gain == pytest.approx(statistics.mean(RISEN_END) - statistics.mean(QUIET_START))
    assert margin.threshold == pytest.approx(NOISE_K * statistics.stdev(QUIET_START))


def test_the_same_rise_inside_a_noisy_first_window_does_not_learn():
    with pytest.raises(AssertionError, match="within the noise"):
        assert_learns([*NOISY_START, *[0.05] * 18, *RISEN_END], window=6)


def test_a_rise_exactly_at_the_margin_does_not_learn():
    start = [-1.0, 0.0, 1.0]  # mean 0, std exactly 1: a rise of exactly k is not enough, k + 0.5 is
    with pytest.raises(AssertionError):
        assert_learns([*start, *[NOISE_K] * 3], window=3)
    assert assert_learns([*start, *[NOISE_K + 0.5] * 3], window=3).gain == NOISE_K + 0.5


@pytest.mark.parametrize(("returns", "window"), [([0.0] * 11, 6), ([0.0] * 4, 1)])
def test_windows_that_overlap_or_have_no_spread_are_an_error(returns, window):
    with pytest.raises(ValueError, match="need window"):
        assert_learns(returns, window)


def test_the_thread_fixture_puts_threads_and_rng_back_even_after_a_failure():
    before, rng = torch.get_num_threads(), torch.get_rng_state()
    inside = 1 if before != 1 else 2
    with pytest.raises(RuntimeError, match="boom"), held_torch_threads(inside):
        assert torch.get_num_threads() == inside
        torch.rand(3)  # moves the global generator
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    assert torch.equal(torch.get_rng_state(), rng)


# The first 6 updates of test_ppo_learns.py's run, measured (CPU, 2 threads), and the README's last-6 mean.
MEASURED_START = [0.0531, -0.0964, -0.0520, 0.0724, 0.0353, -0.0229]  # mean -0.0017, std 0.066


def test_the_readme_rise_clears_one_std_of_the_measured_first_window_and_not_two():
    returns = [*MEASURED_START, *[0.05] * 18, *[0.093] * 6]
    margin = assert_learns(returns, window=6)
    assert margin.gain / margin.noise == pytest.approx(1.44, abs=0.01)
    with pytest.raises(AssertionError, match="within the noise"):
        assert_learns(returns, window=6, k=2.0)
