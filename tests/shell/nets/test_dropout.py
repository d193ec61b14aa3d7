"""Dropout drawn from a generator the run owns: the masks, the scale, eval mode, and the global RNG left alone."""

import pytest
import torch
import torch.nn.functional as F

from esper.shell.nets.dropout import Dropout, causal_attention, dropout_generators
from esper.shell.nets.hosts import host_for


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_masks_are_torchs_own_dropout_drawn_from_the_given_generator() -> None:
    x = torch.randn(4, 64, generator=gen(1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        expected = F.dropout(x, p=0.3, training=True)
    assert torch.equal(Dropout(0.3, gen(7))(x), expected)


def test_kept_elements_are_scaled_by_one_over_one_minus_p() -> None:
    x = torch.ones(10_000)
    y = Dropout(0.25, gen())(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.02  # P(keep) = 1 − p
    assert abs(y.mean().item() - 1.0) < 0.03  # E[y] = x


@pytest.mark.parametrize(("p", "train"), [(0.5, False), (0.0, True)])
def test_eval_mode_or_zero_rate_is_the_identity_and_draws_nothing(p: float, train: bool) -> None:
    g = gen()
    before = g.get_state()
    drop = Dropout(p, g).train(train)
    x = torch.randn(3, 5)
    assert drop(x) is x
    assert torch.equal(g.get_state(), before)


def test_a_generator_on_another_device_is_refused() -> None:
    with pytest.raises(ValueError, match="dropout generator on cpu, input on meta"):
        Dropout(0.1, gen())(torch.empty(2, 3, device="meta"))


def test_rate_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        Dropout(1.0, gen())


def reference_attention(q, k, v, p: float, g: torch.Generator) -> torch.Tensor:
    t = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    weights = torch.softmax(scores, -1)
    mask = torch.empty_like(weights).bernoulli_(1 - p, generator=g) / (1 - p)
    return (weights * mask) @ v


def test_attention_drops_weights_from_the_generator_and_stays_causal() -> None:
    q, k, v = torch.randn(3, 2, 4, 6, 8, generator=gen(2)).unbind(0)
    out = causal_attention(q, k, v, None, Dropout(0.2, gen(3)))
    assert torch.allclose(out, reference_attention(q, k, v, 0.2, gen(3)), atol=1e-6)
    k2, v2 = k.clone(), v.clone()
    k2[..., 4:, :] += 1.0  # the future of query 3 changes; what query 3 and before see does not
    v2[..., 4:, :] -= 1.0
    out2 = causal_attention(q, k2, v2, None, Dropout(0.2, gen(3)))
    assert torch.equal(out2[..., :4, :], out[..., :4, :])


def test_attention_without_drops_is_sdpa() -> None:
    q, k, v = torch.randn(3, 2, 4, 6, 8, generator=gen(2)).unbind(0)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.equal(causal_attention(q, k, v, None, Dropout(0.2, gen()).eval()), sdpa)
    assert torch.allclose(reference_attention(q, k, v, 0.0, gen()), sdpa, atol=1e-6)


# --- the transformer host ---------------------------------------------------------------------------


def tokens(n: int = 12) -> torch.Tensor:
    return torch.randint(0, 256, (2, n), generator=gen(4))


@pytest.mark.parametrize("backend", ["hf", "native"])
def test_every_dropout_of_the_host_draws_from_its_one_generator(backend: str) -> None:
    drops = gen(5)
    host = host_for("tiny", gen(), dropout=0.3, backend=backend, dropout_generator=drops)
    assert dropout_generators(host) == [drops]
    assert not any(isinstance(m, torch.nn.Dropout) for m in host.modules())  # GPT2Block's were replaced
    state = drops.get_state()
    host.train()(tokens())
    assert not torch.equal(drops.get_state(), state)  # it drew


@pytest.mark.parametrize("backend", ["hf", "native"])
def test_a_train_forward_never_touches_the_global_rng(backend: str) -> None:
    host = host_for("tiny", gen(), dropout=0.3, backend=backend, dropout_generator=gen(5)).train()
    state = torch.get_rng_state()
    out = host(tokens())
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.allclose(out, host.eval()(tokens()))  # and dropout was on


@pytest.mark.parametrize("backend", ["hf", "native"])
def test_same_dropout_seed_same_masks_whatever_the_global_rng(backend: str) -> None:
    outs = []
    for global_seed in (1, 2):
        host = host_for("tiny", gen(), dropout=0.3, backend=backend, dropout_generator=gen(5)).train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)
            outs.append(host(tokens()))
    assert torch.equal(outs[0], outs[1])
    other = host_for("tiny", gen(), dropout=0.3, backend=backend, dropout_generator=gen(6)).train()
    assert not torch.allclose(other(tokens()), outs[0])


def test_both_backends_draw_the_same_masks() -> None:
    hf, native = (host_for("tiny", gen(), dropout=0.3, backend=b, dropout_generator=gen(5)).train()
                  for b in ("hf", "native"))
    assert torch.allclose(hf(tokens()), native(tokens()), atol=1e-5)
