"""Training FLOPs (docs/runtime.md §9): `FlopCounterMode` on one train step, checked against hand counts
made from layer shapes with torch's conventions (2 FLOPs per multiply–add; a conv / linear backward
is a weight-gradient product plus an input-gradient product only when the input needs a gradient;
norms, activations, pooling, embeddings and the loss count 0)."""

import pytest
import torch
from seedbed_drive import boundary, make_model, seeded

from esper.core import lifecycle
from esper.core.actions import FactoredAction
from esper.core.stages import Stage
from esper.shell.data.loading import load_task
from esper.shell.flops import FlopMeter, structure_key, train_flops_per_sample
from esper.shell.model import MorphogeneticModel
from esper.shell.nets.hosts import host_for
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def images():
    return load_task("synth-images", device="cpu", train_size=16, val_size=16)


@pytest.fixture(scope="module")
def stories():
    return load_task("synth-stories", device="cpu", train_size=16, val_size=16, block_size=16)


def trainer(images, **overrides) -> Trainer:
    return Trainer(RunConfig(task="synth-images", epochs=1, **overrides), images, CPU)


def conv_flops(weight_shape: torch.Size, height: int, width: int) -> int:
    """Forward multiply–adds × 2 of a stride-1 'same' conv, per sample (groups live in the weight shape)."""
    c_out, c_in_per_group, kh, kw = weight_shape
    return 2 * c_out * c_in_per_group * kh * kw * height * width


def host_hand_count(model: MorphogeneticModel) -> int:
    """Per-sample train FLOPs of the CNN host: each conv counts forward + weight grad + input grad,
    except block 0, whose input (the image batch) needs no gradient; the head's linear likewise."""
    cfg = model.host.config
    _, height, width = cfg.input_shape
    total = 0
    for i, block in enumerate(model.host.blocks):
        size = min(i, cfg.pool_layers)  # the conv runs before its block's pool
        fwd = conv_flops(block.conv.weight.shape, height >> size, width >> size)
        total += fwd * (2 if i == 0 else 3)
    n_cls, c_last = model.host.head.fc.weight.shape
    return total + 3 * 2 * c_last * n_cls


def test_host_matches_the_hand_count(images):
    model = trainer(images).model
    expected = host_hand_count(model)
    # Written out for the synth-images (cifar10) host, so the helper itself is checked:
    # conv 3→8 @32², 8→16 @16², 16→32 @8², fc 32→10.
    assert expected == 2 * 442_368 + 3 * 589_824 + 3 * 589_824 + 3 * 640 == 4_425_600
    assert train_flops_per_sample(model, images) == expected
    assert train_flops_per_sample(model, images, batch_size=4) == expected  # per sample: batch-free


def test_conv_light_fossil_adds_its_hand_count(images):
    host = trainer(images).model
    grown = trainer(images, controller="static", static_seeds=("late:conv_light",)).model
    seed = grown.slot("late").module
    _, height, width = host.host.slot_specs[2].feature_shape  # late slot: 32 × 4 × 4
    # conv3×3 C→C: forward, weight grad, input grad (its input relu(GN(x)) needs grad for GN's affine);
    # GroupNorm and ReLU count 0 under torch's conventions.
    expected = 3 * conv_flops(seed.conv.weight.shape, height, width)
    assert expected == 3 * 2 * 32 * 32 * 9 * 16
    assert train_flops_per_sample(grown, images) - train_flops_per_sample(host, images) == expected


def test_bf16_autocast_counts_the_same_ops(images):
    model = trainer(images).model
    assert train_flops_per_sample(model, images, autocast=torch.bfloat16) == host_hand_count(model)


# p = 0: the CPU flash kernel (counted with torch's SDPA formulas: backward recomputes the scores,
# five products); p > 0: the explicit product of `causal_attention`, plain bmm (backward: two per bmm, four).
@pytest.mark.parametrize(("dropout", "backward_bmm"), [(0.0, 5), (0.1, 4)])
def test_transformer_host_matches_the_hand_count(stories, dropout, backward_bmm):
    model = MorphogeneticModel(host_for("tiny", torch.Generator().manual_seed(0), vocab_size=stories.n_classes,
                                        block_size=16, dropout=dropout), run_seed=0)
    cfg = model.host.config
    t, d, v, layers = cfg.block_size, cfg.d_model, cfg.vocab_size, cfg.n_layers
    # Per layer, three products per linear (fwd, weight grad, input grad): qkv D→3D, proj D→D, MLP D→4D→D;
    # attention: QKᵀ and AV forward, 2·T²·D each over all heads, and `backward_bmm` more in backward.
    attention = 2 * t * t * d * (2 + backward_bmm)
    per_layer = 3 * 2 * t * (3 * d * d + d * d + 4 * d * d + 4 * d * d) + attention
    head = 3 * 2 * t * d * v  # tied head: the embedding's own lookup counts 0
    state, drops = torch.get_rng_state(), model.host.drop.generator.get_state()
    assert train_flops_per_sample(model, stories) == layers * per_layer + head
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(model.host.drop.generator.get_state(), drops)  # dropout drew, and its stream is restored


def test_structure_key_follows_the_slots():
    model = make_model("cifar10")
    empty = structure_key(model)
    assert empty == tuple((s, None, False, False, False) for s in ("early", "mid", "late"))
    model.sync_to(seeded(model, "late", "conv_light", Stage.TRAINING))
    training = structure_key(model)
    assert training[2] == ("late", "conv_light", True, True, False) and training[:2] == empty[:2]
    state = seeded(model, "late", "conv_light", Stage.BLENDING)
    model.sync_to(state)
    key, alphas = structure_key(model), set()
    while state.slot("late").stage == Stage.BLENDING:  # the ramp moves α; the structure stays
        alphas.add(float(model.slot("late").alpha))
        assert structure_key(model) == key
        state = boundary(state, model.rules())
        model.sync_to(state)
    assert len(alphas) >= 2 and state.slot("late").stage == Stage.PROBATIONARY
    assert structure_key(model) == key  # PROBATIONARY runs the same ops as BLENDING
    model.sync_to(seeded(model, "late", "conv_light", Stage.FOSSILIZED))
    assert structure_key(model)[2] == ("late", "conv_light", True, True, True)


def test_key_tracks_input_grad_because_flops_do(images):
    """A bottleneck's first layer is a 1×1 conv on the slot input: its input-grad product counts
    only once the input is released (FOSSILIZED by default), 2·C·b·H·W per sample."""
    model = make_model("cifar10")
    base = train_flops_per_sample(model, images)
    model.sync_to(seeded(model, "late", "bottleneck", Stage.TRAINING))
    detached = train_flops_per_sample(model, images)
    down = model.slot("late").module.down.weight.shape
    model.sync_to(seeded(model, "late", "bottleneck", Stage.FOSSILIZED))
    assert train_flops_per_sample(model, images) - detached == conv_flops(down, 4, 4) == 2 * 32 * 8 * 16
    assert detached > base


def test_meter_measures_once_per_structure_and_accumulates(images):
    t = trainer(images, max_seeds=1)
    meter = FlopMeter()
    host = meter.per_sample(t.model, images)
    assert meter.per_sample(t.model, images) == host and meter.measurements == 1
    assert meter.add_epoch(t.model, images, 100) == 100 * host and meter.total == 100 * host
    germinate = FactoredAction.germinate(2, t.rules.catalogue.germinable_index("conv_light"), 0)
    state, _ = lifecycle.act(t.state, germinate, t.rules)
    t.model.sync_to(state)
    grown = meter.per_sample(t.model, images)
    assert grown > host and meter.measurements == 2
    meter.add_epoch(t.model, images, 30)
    assert meter.total == 100 * host + 30 * grown
    t.model.sync_to(t.state)  # back to the empty host: cached, no new measurement
    assert meter.per_sample(t.model, images) == host and meter.measurements == 2
    with pytest.raises(ValueError):
        meter.add_epoch(t.model, images, -1)


def test_training_is_untouched(images):
    t = trainer(images, controller="static", static_seeds=("late:conv_light",))
    model = t.model
    model.eval()
    marked = next(model.parameters())
    marked.grad = torch.ones_like(marked)
    before = {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}  # BatchNorm stats, incl. non-persistent
    rng = torch.get_rng_state()
    data_rng, augment_rng = t.data_gen.get_state(), t.augment_gen.get_state()
    grad = marked.grad
    train_flops_per_sample(model, images)
    assert not model.training
    assert marked.grad is grad
    assert all(p.grad is None for p in model.parameters() if p is not marked)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(t.data_gen.get_state(), data_rng) and torch.equal(t.augment_gen.get_state(), augment_rng)
