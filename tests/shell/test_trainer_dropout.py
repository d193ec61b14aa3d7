"""The trainer owns the dropout stream: one generator per run (STREAM_DROPOUT), on the run's device,
given to the host, kept across a governor rollback and saved in run checkpoints."""

import pytest
import torch

from esper.shell.data.loading import load_task
from esper.shell.nets.dropout import dropout_generators
from esper.shell.run_checkpoint import restore_trainer, run_payload
from esper.shell.run_config import RunConfig
from esper.shell.trainer import STREAM_DROPOUT, Trainer, stream_seed

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def stories():
    return load_task("synth-stories", device="cpu", train_size=16, val_size=16, block_size=16)


def trainer(stories, seed: int = 3) -> Trainer:
    # tinystories' host has dropout 0.1; width 96 (16 per head) keeps it small
    cfg = RunConfig(task="synth-stories", host="tinystories", host_width=96, epochs=2, seed=seed,
                    batch_size=8, train_batches=2)
    return Trainer(cfg, stories, CPU)


def test_the_host_draws_from_the_runs_dropout_stream(stories) -> None:
    t = trainer(stories)
    assert t.model.host.config.dropout > 0
    assert dropout_generators(t.model) == [t.dropout_gen]
    assert t.dropout_gen.initial_seed() == stream_seed(3, STREAM_DROPOUT)


def test_same_seed_same_training_whatever_the_global_rng_does_in_between(stories) -> None:
    results = []
    for global_seed in (11, 12):
        t = trainer(stories)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)
            state = torch.get_rng_state()
            result = t.run_epoch()
            assert torch.equal(torch.get_rng_state(), state)  # the epoch drew nothing from the global RNG
        results.append((result.train_loss, result.val_loss, t.dropout_gen.get_state()))
    assert results[0][:2] == results[1][:2]
    assert torch.equal(results[0][2], results[1][2])
    assert not torch.equal(results[0][2], trainer(stories).dropout_gen.get_state())  # the epoch drew masks


def test_rollbacks_keep_and_run_checkpoints_carry_the_dropout_stream(stories) -> None:
    t = trainer(stories)
    t.run_epoch()
    payload = run_payload(t, run_id="r", config={}, data_source={}, seq=0)
    t.restore_snapshot(t.snapshot)  # what a governor rollback and a resume do: a rebuilt model
    assert dropout_generators(t.model) == [t.dropout_gen]
    resumed = trainer(stories)
    restore_trainer(resumed, payload)
    assert torch.equal(resumed.dropout_gen.get_state(), t.dropout_gen.get_state())
    del payload["rng"]["dropout"]  # a checkpoint written before the stream existed still loads
    fresh = trainer(stories)
    restore_trainer(fresh, payload)
    assert torch.equal(fresh.dropout_gen.get_state(), trainer(stories).dropout_gen.get_state())
