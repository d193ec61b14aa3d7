import pytest
import torch

from esper.shell.data import ImageTransform, crop_flip, draw_augment, normalise, prepare_batch


def _batch(n: int = 16, channels: int = 3, side: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(7))


def _reference(x: torch.Tensor, padding: int, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Per-sample CPU loop: pad with zeros, crop, mirror (RandomCrop then RandomHorizontalFlip)."""
    _, _, height, width = x.shape
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        padded = torch.zeros((x.shape[1], height + 2 * padding, width + 2 * padding), dtype=x.dtype)
        padded[:, padding:padding + height, padding:padding + width] = x[i]
        row, col = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[:, row:row + height, col:col + width]
        out[i] = crop.flip(-1) if bool(flips[i]) else crop
    return out


@pytest.mark.parametrize("padding", [0, 2, 4])
def test_crop_flip_equals_the_reference_on_fixed_offsets(padding: int) -> None:
    x = _batch()
    offsets, flips = draw_augment(len(x), padding, torch.Generator().manual_seed(1))
    flips[0], flips[1] = True, False  # both branches covered whatever the draw
    out = crop_flip(x, padding, offsets, flips)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, _reference(x, padding, offsets, flips))


def test_offsets_within_range_and_flips_about_half() -> None:
    offsets, flips = draw_augment(4_000, 4, torch.Generator().manual_seed(2))
    assert offsets.dtype == torch.int64 and offsets.shape == (4_000, 2)
    assert int(offsets.min()) == 0 and int(offsets.max()) == 8
    assert 0.45 < float(flips.float().mean()) < 0.55


def test_zero_offsets_with_flip_mirror_and_centre_offsets_keep_the_image() -> None:
    x = _batch(n=2)
    centre = torch.full((2, 2), 4)
    assert torch.equal(crop_flip(x, 4, centre, torch.tensor([False, False])), x)
    assert torch.equal(crop_flip(x, 4, centre, torch.tensor([True, True])), x.flip(-1))
    corner = crop_flip(x, 4, torch.zeros((2, 2), dtype=torch.int64), torch.tensor([False, False]))
    assert int(corner[:, :, :4, :].abs().sum()) == 0 and torch.equal(corner[:, :, 4:, 4:], x[:, :, :4, :4])


def test_reproducible_from_the_augment_generator_state() -> None:
    x = _batch()
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    first = prepare_batch(x, True, generator, padding=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    generator.set_state(state)
    second = prepare_batch(x, True, generator, padding=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    third = prepare_batch(x, True, generator, padding=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_normalisation_per_channel_and_eval_path_skips_augmentation() -> None:
    x = _batch(channels=2)
    transform = ImageTransform(padding=4, hflip=True, mean=(0.5, 0.25), std=(0.5, 0.25), device="cpu")
    out = transform(x, False)
    expected = torch.stack([(x[:, 0].float() / 255 - 0.5) / 0.5, (x[:, 1].float() / 255 - 0.25) / 0.25], 1)
    assert out.dtype == torch.float32 and out.shape == x.shape and out.is_contiguous()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(normalise(x, transform.mean, transform.std), expected)
    with pytest.raises(ValueError, match="augment generator"):
        transform(x, True, None)


def test_no_hflip_keeps_orientation() -> None:
    x = _batch()
    transform = ImageTransform(padding=0, hflip=False, mean=(0.0,) * 3, std=(1.0,) * 3, device="cpu")
    out = transform(x, True, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x.float() / 255)
