"""The reward numerics called straight on a batch, on another device and with masks of another dtype
(what surviving `make mutate` mutants of esper.core.rewards changed unnoticed, since every other test calls them
per env or under vmap, on CPU, with masks already in the reward dtype).

- Batch: the module promises to reduce over the last (slot) axis only, so a call on inputs with a leading env
  axis equals the per-env calls stacked (a sum over every axis would mix the envs).
- Device: every constant a function makes goes next to its inputs (`esper.core.xp.device`). Torch's `meta`
  device runs the same ops without data, so a CPU-only machine sees a CPU constant meeting a non-CPU tensor
  (an error, or a field left on the CPU) as CUDA would.
- Dtype: valid/terminal masks are cast to the reward (or potential) dtype, so the mask's dtype never decides the
  result's, and a float64 reward is counted in float64 throughout.
"""

import attrs
import pytest
import torch
import torch.utils._pytree as torch_pytree
from lifecycle_helpers import fresh, make_rules, measure
from reward_helpers import random_inputs

from esper.core import lifecycle
from esper.core.actions import FactoredAction, Op
from esper.core.rewards import RewardComponents, RewardInputs, discounted_prefix, pbrs_sum, reward, reward_inputs
from esper.core.rl_config import REWARD_MODES, RLConfig
from esper.core.stages import Stage

F32, F64 = torch.float32, torch.float64
THETA = 0.01
INT_FIELDS = {"stage_before", "stage_after", "op", "slot"}
SLOT_FIELDS = {"stage_before", "stage_after", "contribution", "measured", "acc_at_germination", "last_contribution",
               "seed_params_before"}


def _random_batch(n_envs: int, n_slots: int, seed: int) -> RewardInputs:
    """float64 inputs [n_envs, n_slots] / [n_envs]: every other env terminal, seeds everywhere."""
    return random_inputs(n_envs, n_slots, seed, F64, continuous_params=True, host_low=1e5, alternate_terminal=True)


def test_rewards_on_a_batch_equal_the_per_env_rewards() -> None:
    x = _random_batch(8, 3, seed=7)
    good = (x.stage_after == int(Stage.FOSSILIZED)) & (x.last_contribution >= THETA)
    assert bool((good.any(dim=-1) & (x.terminal == 1.0)).any())  # a terminal env with a fossil to count
    assert bool((x.measured == 1.0).any()) and bool((x.seed_params_before > 0).all())
    for mode in REWARD_MODES:
        cfg = RLConfig(reward_mode=mode)
        batched = reward(x, cfg, THETA)
        for i in range(8):
            one = reward(torch_pytree.tree_map(lambda leaf, i=i: leaf[i], x), cfg, THETA)
            for name in attrs.fields_dict(RewardComponents):
                got = getattr(batched, name)
                assert got.shape == (8,), (mode, name)
                torch.testing.assert_close(got[i], getattr(one, name), rtol=1e-12, atol=1e-12, msg=(mode, name, i))


def test_pbrs_sum_on_a_batch_of_episodes_equals_the_per_episode_sums() -> None:
    g = torch.Generator().manual_seed(3)
    before = torch.randint(0, len(Stage), (4, 6, 3), generator=g)
    after = torch.randint(0, len(Stage), (4, 6, 3), generator=g)
    valid = (torch.arange(6) < torch.tensor([[6], [4], [1], [5]])).to(F64)
    terminal = torch.zeros(4, 6, dtype=F64)
    terminal[0, -1] = 1.0
    phi = torch.tensor(RLConfig().potentials, dtype=F64)
    batched = pbrs_sum(before, after, valid, terminal, phi, 0.9)
    assert batched.shape == (4,)
    for i in range(4):
        one = pbrs_sum(before[i], after[i], valid[i], terminal[i], phi, 0.9)
        torch.testing.assert_close(batched[i], one, rtol=1e-12, atol=1e-12)


def _meta_batch(n_envs: int, n_slots: int) -> RewardInputs:
    def z(name: str) -> torch.Tensor:
        shape = (n_envs, n_slots) if name in SLOT_FIELDS else (n_envs,)
        return torch.zeros(shape, dtype=torch.int64 if name in INT_FIELDS else F32, device="meta")

    return RewardInputs(**{name: z(name) for name in attrs.fields_dict(RewardInputs)})


def test_rewards_and_pbrs_sum_stay_on_the_inputs_device() -> None:
    x = _meta_batch(2, 3)
    for mode in REWARD_MODES:
        r = reward(x, RLConfig(reward_mode=mode), THETA)  # the potential table must follow the stages
        for name in attrs.fields_dict(RewardComponents):
            got = getattr(r, name)
            assert (got.device.type, got.shape) == ("meta", (2,)), (mode, name)
    phi = torch.zeros(len(Stage), dtype=F32, device="meta")
    stages = torch.zeros(2, 5, 3, dtype=torch.int64, device="meta")
    masks = torch.zeros(2, 5, dtype=F32, device="meta")
    total = pbrs_sum(stages, stages, masks, masks, phi, 0.9)  # γ^t must follow the potentials
    assert (total.device.type, total.shape, total.dtype) == ("meta", (2,), F32)


def test_reward_inputs_puts_every_field_on_the_requested_device() -> None:
    before = fresh()
    after, _ = lifecycle.apply_action(lifecycle.record(before, measure(before, val_acc=0.5)),
                                      FactoredAction.germinate(0, 0, 0), make_rules())
    x = reward_inputs(before, after, acc=0.5, op=int(Op.GERMINATE), slot=0, terminal=False, rolled_back=False,
                      host_params=6_418, seed_params_before=[0, 0, 0], culled_age=0, dtype=F64, device="meta")
    for name in attrs.fields_dict(RewardInputs):
        got = getattr(x, name)
        want = torch.int64 if name in INT_FIELDS else F64
        assert (got.device.type, got.dtype) == ("meta", want), name


def test_the_masks_dtype_never_decides_the_results_dtype() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0]], dtype=F32)
    for valid in (torch.tensor([[1.0, 1.0, 0.0]], dtype=F64), torch.tensor([[True, True, False]])):
        h = discounted_prefix(rewards, valid, 0.5)
        assert h.dtype == F32 and h.tolist() == [[1.0, 2.5, 0.0]]
    phi = torch.tensor(RLConfig().potentials, dtype=F32)
    before, after = torch.tensor([[0, 0], [2, 0]]), torch.tensor([[2, 0], [3, 2]])
    cut = (torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64))  # (valid, terminal) as float64 masks
    ended = (torch.ones(2, dtype=torch.bool), torch.tensor([False, True]))  # as bool masks
    total = pbrs_sum(before, after, *cut, phi, 0.9)
    assert total.dtype == F32 and float(total) == pytest.approx(0.9**2 * (0.35 + 0.2), abs=1e-7)
    total = pbrs_sum(before, after, *ended, phi, 0.9)
    assert total.dtype == F32 and float(total) == pytest.approx(0.0, abs=1e-7)


def test_a_float64_terminal_bonus_counts_the_fossils_in_float64() -> None:
    n = 4
    stages = torch.tensor([Stage.FOSSILIZED] * 3 + [Stage.PROBATIONARY])
    x = RewardInputs(
        stage_before=stages, stage_after=stages, contribution=torch.zeros(n, dtype=F64),
        measured=torch.zeros(n, dtype=F64), acc_at_germination=torch.zeros(n, dtype=F64),
        last_contribution=torch.tensor([0.02, 0.005, THETA, 0.5], dtype=F64),
        seed_params_before=torch.zeros(n, dtype=F64), host_params=torch.tensor(1e4, dtype=F64),
        acc=torch.tensor(0.7, dtype=F64), op=torch.tensor(0), slot=torch.tensor(0),
        culled_age=torch.tensor(0.0, dtype=F64), terminal=torch.tensor(1.0, dtype=F64),
        rolled_back=torch.tensor(0.0, dtype=F64))
    terminal = reward(x, RLConfig(), THETA).terminal
    assert terminal.dtype == F64
    assert float(terminal) == pytest.approx(0.7 + 0.1 * 2.0, abs=1e-12)  # a float32 0.1·2 is 3e-9 off
