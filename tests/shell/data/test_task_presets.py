import math

import pytest

from esper.core import codec
from esper.core.tasks import DEFAULT_TASK, TASKS, UnknownTaskError, task_preset
from esper.shell.nets.hosts import host_config


def test_every_preset_of_the_table_exists_and_synth_images_is_the_default() -> None:
    assert set(TASKS) == {"synth-images", "synth-stories", "fashion-mnist", "cifar10", "cifar10-deep",
                          "tinystories"}
    assert DEFAULT_TASK == "synth-images"


def test_unknown_task_names_every_known_one() -> None:
    with pytest.raises(UnknownTaskError) as info:
        task_preset("cifar100")
    assert "cifar100" in str(info.value)
    for name in TASKS:
        assert name in str(info.value)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_preset_agrees_with_its_host(name: str) -> None:
    preset = task_preset(name)
    host = host_config(preset.host)
    if preset.modality == "images":
        assert tuple(host.input_shape) == preset.input_shape
        assert host.n_classes == preset.n_classes
    else:
        assert host.block_size == preset.block_size
        assert host.vocab_size == preset.n_classes
    assert preset.random_guess_loss == pytest.approx(math.log(preset.n_classes))


def test_table_values() -> None:
    synth = task_preset("synth-images")
    assert (synth.train_size, synth.heldout_size, synth.batch_size, synth.epochs) == (8_000, 2_000, 128, 40)
    assert synth.mean is None and synth.std is None  # measured at generation
    assert (synth.optimizer, synth.host_lr, synth.seed_lr, synth.weight_decay) == ("sgd", 0.01, 0.01, 5e-4)
    assert (synth.augment_padding, synth.hflip, synth.plateau_gain) == (4, True, 0.005)
    fashion = task_preset("fashion-mnist")
    assert (fashion.augment_padding, fashion.mean, fashion.std) == (2, (0.2860,), (0.3530,))
    assert fashion.epochs == 30
    assert (fashion.germination, fashion.min_germinate_epoch, fashion.min_training_improvement) == ("early", 2, -0.005)
    assert (synth.germination, synth.min_germinate_epoch, synth.min_training_improvement) == ("plateau", 5, None)
    cifar = task_preset("cifar10")
    assert cifar.mean == (0.4914, 0.4822, 0.4465) and cifar.std == (0.2470, 0.2435, 0.2616)
    stories = task_preset("tinystories")
    assert (stories.heldout_size, stories.batch_size, stories.train_batches_per_epoch) == (4_096, 32, 500)
    assert (stories.optimizer, stories.host_lr, stories.augment_padding, stories.plateau_gain) == (
        "adamw", 3e-4, 0, 0.002)
    assert stories.random_guess_loss == pytest.approx(10.825, abs=1e-3)
    synth_text = task_preset("synth-stories")
    assert (synth_text.train_size, synth_text.heldout_size, synth_text.epochs) == (20_000, 2_000, 30)
    assert synth_text.train_batches_per_epoch == 100 and synth_text.host_lr == 1e-3
    assert synth_text.random_guess_loss == pytest.approx(5.545, abs=1e-3)


def test_encodes_to_plain_data() -> None:
    data = codec.encode(task_preset("cifar10"))
    assert data["input_shape"] == [3, 32, 32] and data["mean"] == [0.4914, 0.4822, 0.4465]


def test_a_preset_with_an_unknown_germination_is_refused() -> None:
    import attrs

    from esper.core.errors import ConfigError

    with pytest.raises(ConfigError, match="task synth-images: germination 'soon' not in"):
        attrs.evolve(task_preset("synth-images"), germination="soon")
    assert task_preset("synth-images").lifecycle_overrides == {}
    tuned = attrs.evolve(task_preset("synth-images"), min_training_improvement=0.0)
    assert tuned.lifecycle_overrides == {"min_training_improvement": 0.0}
