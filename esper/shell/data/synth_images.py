"""`synth-images/v1`: a procedural 10-class image task (docs/runtime.md §5.3), generated in-process.

Class y = shape (y mod 5: disk, square, triangle, ring, plus) × fill (y div 5: solid, striped).
Each image: a gradient background between two random colours plus Gaussian noise, one object
(centre U[10, 22]², radius U[6, 10], rotation U[0, 2π)) in a colour at L1 distance ≥ 0.6 from the
background mean, stripes of period U{3, 4, 5} px for the striped classes, two 1-px distractor
segments, sigmoid anti-aliasing of every edge, quantised to uint8.

Determinism: one CPU `torch.Generator` per split seeded from `SeedSequence([data_seed, 1, split])`;
chunks of 4,096 draw their parameters in a fixed order; the arithmetic runs in float64 so that the
last-ulp differences between CPUs' vectorised math cannot move a pixel across a rounding boundary.
Changing anything here that alters the bytes must bump `GENERATOR`.
"""

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

GENERATOR = "synth-images/v1"
SIZE = 32
N_CLASSES = 10
SHAPES = ("disk", "square", "triangle", "ring", "plus")
CHUNK = 4096
NOISE_SIGMA = 0.08
EDGE_SLOPE = 2.0  # sigmoid slope per pixel of signed distance
MIN_COLOUR_DISTANCE = 0.6  # L1, between the object colour and the background mean
COLOUR_CANDIDATES = 16  # rejection-sampling tries; all failing (p < 1e-8) falls back to a far corner
N_DISTRACTORS = 2
SPLITS = {"train": 0, "heldout": 1}
_DTYPE = torch.float64
_RENDER_BLOCK = CHUNK  # smaller blocks fit caches better but pay more thread syncs under load


def split_generator(data_seed: int, split: str) -> torch.Generator:
    """The CPU generator of a split: first 64-bit word of SeedSequence([data_seed, 1, 0 | 1])."""
    word = np.random.SeedSequence([data_seed, 1, SPLITS[split]]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(word))


def generate(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n images (uint8, (n, 3, 32, 32)) and labels (int64, (n,)), balanced: n // 10 per class, the
    remainder going to the lowest classes, in a random order."""
    labels = (torch.arange(n) % N_CLASSES)[torch.randperm(n, generator=generator)]
    images = torch.empty((n, 3, SIZE, SIZE), dtype=torch.uint8)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        images[start:stop] = _render_chunk(labels[start:stop], generator)
    return images, labels


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 images scaled to [0, 1]."""
    means, stds = [], []
    for channel in range(images.shape[1]):
        values = images[:, channel].to(_DTYPE) / 255.0
        means.append(round(float(values.mean()), 6))
        stds.append(round(float(values.std(correction=0)), 6))
    return tuple(means), tuple(stds)


# --- rendering -------------------------------------------------------------------------------


def _uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=_DTYPE)


def _render_chunk(labels: Tensor, generator: torch.Generator) -> Tensor:
    """Draws every parameter of the chunk (fixed order), then renders it in `_RENDER_BLOCK` pieces;
    the bytes depend only on the draws, never on the block size (a test holds this)."""
    params = _draw(labels.shape[0], generator)
    params["label"] = labels
    out = torch.empty((labels.shape[0], 3, SIZE, SIZE), dtype=torch.uint8)
    for start in range(0, labels.shape[0], _RENDER_BLOCK):
        block = {name: value[start:start + _RENDER_BLOCK] for name, value in params.items()}
        out[start:start + _RENDER_BLOCK] = _render(block)
    return out


def _draw(n: int, generator: torch.Generator) -> dict[str, Tensor]:
    """All random parameters of n images. The order of the draws is part of the v1 contract."""
    return {
        "bg_colours": _uniform(generator, 0.0, 1.0, n, 2, 3),
        "bg_angle": _uniform(generator, 0.0, 2 * math.pi, n),
        "centre": _uniform(generator, 10.0, 22.0, n, 2),
        "radius": _uniform(generator, 6.0, 10.0, n),
        "rotation": _uniform(generator, 0.0, 2 * math.pi, n),
        "candidates": _uniform(generator, 0.0, 1.0, n, COLOUR_CANDIDATES, 3),
        "period": torch.randint(3, 6, (n,), generator=generator).to(_DTYPE),
        "stripe_angle": _uniform(generator, 0.0, math.pi, n),
        "stripe_phase": _uniform(generator, 0.0, 1.0, n),
        "seg_centre": _uniform(generator, 0.0, float(SIZE), n, N_DISTRACTORS, 2),
        "seg_length": _uniform(generator, 6.0, 12.0, n, N_DISTRACTORS),
        "seg_angle": _uniform(generator, 0.0, 2 * math.pi, n, N_DISTRACTORS),
        "seg_colour": _uniform(generator, 0.0, 1.0, n, N_DISTRACTORS, 3),
        "noise": torch.randn((n, 3, SIZE, SIZE), generator=generator, dtype=_DTYPE),
    }


def _render(p: dict[str, Tensor]) -> Tensor:
    """Background + noise, then the object, then the distractors on top; quantised to uint8."""
    ys, xs = _pixel_grid()
    image = _background(p["bg_colours"], p["bg_angle"], ys, xs).add_(p["noise"], alpha=NOISE_SIGMA)
    colour = _object_colour(p["candidates"], p["bg_colours"].mean(dim=1))
    dy, dx = ys - p["centre"][:, 0, None, None], xs - p["centre"][:, 1, None, None]
    coverage = _edge(-_shape_distance(p["label"] % 5, dx, dy, p["radius"], p["rotation"]))
    striped = (p["label"] // 5 == 1).to(_DTYPE)
    stripes = _stripes(dy, dx, p["period"], p["stripe_angle"], p["stripe_phase"]) * striped[:, None, None]
    fill = colour[:, :, None, None] * (1.0 - 0.5 * stripes[:, None])  # c and 0.5c alternate
    _over_(image, fill, coverage)
    for k in range(N_DISTRACTORS):
        line = _segment_coverage(ys, xs, p["seg_centre"][:, k], p["seg_length"][:, k], p["seg_angle"][:, k])
        _over_(image, p["seg_colour"][:, k, :, None, None], line)
    return image.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)


def _pixel_grid() -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates (row, col), each (1, 32, 32)."""
    centres = torch.arange(SIZE, dtype=_DTYPE) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    return ys[None], xs[None]


def _edge(signed: Tensor) -> Tensor:
    """Anti-aliased coverage from a signed distance (positive inside)."""
    return torch.sigmoid(EDGE_SLOPE * signed)


def _over_(image: Tensor, colour: Tensor, coverage: Tensor) -> None:
    """Paint `colour` over `image` in place with per-pixel `coverage` (a lerp)."""
    image.lerp_(colour.expand_as(image), coverage[:, None].expand_as(image))


def _background(colours: Tensor, angle: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
    """Linear gradient from colour 0 to colour 1 across the image along `angle`."""
    half_diagonal = SIZE / math.sqrt(2.0)
    along = ((xs - SIZE / 2) * torch.cos(angle)[:, None, None]
             + (ys - SIZE / 2) * torch.sin(angle)[:, None, None])
    t = (along / half_diagonal + 1.0) / 2.0  # in [0, 1]
    start, end = colours[:, 0, :, None, None], colours[:, 1, :, None, None]
    return start + (end - start) * t[:, None]


def _object_colour(candidates: Tensor, bg_mean: Tensor) -> Tensor:
    """The first candidate at L1 distance ≥ 0.6 from the background mean, else the farthest corner."""
    far_enough = (candidates - bg_mean[:, None]).abs().sum(-1) >= MIN_COLOUR_DISTANCE
    first = far_enough.to(torch.int8).argmax(dim=1)
    chosen = candidates[torch.arange(candidates.shape[0]), first]
    corner = (bg_mean < 0.5).to(_DTYPE)  # L1 distance ≥ 1.5 from any mean
    return torch.where(far_enough.any(dim=1, keepdim=True), chosen, corner)


def _shape_distance(shape: Tensor, dx: Tensor, dy: Tensor, radius: Tensor, rotation: Tensor) -> Tensor:
    """Signed distance to each image's shape outline (negative inside), in its rotated frame."""
    cos, sin = torch.cos(rotation)[:, None, None], torch.sin(rotation)[:, None, None]
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    distance = torch.empty_like(u)
    for index, function in enumerate(_SHAPE_DISTANCES):
        mask = shape == index
        if bool(mask.any()):
            distance[mask] = function(u[mask], v[mask], radius[mask][:, None, None])
    return distance


def _disk(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    return torch.hypot(u, v) - r


def _square(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) - 0.8 * r  # half side 0.8 r: an area close to the disk's


def _triangle(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    """Equilateral, circumradius 1.2 r (so its area is not far below the others'), as the max of
    its three edge half-planes: exact inside and on the outline, which is all the edge needs."""
    circumradius = 1.2 * r
    edges = [math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
    planes = torch.stack([math.cos(a) * u + math.sin(a) * v for a in edges])
    return planes.amax(dim=0) - circumradius / 2


def _ring(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    return (torch.hypot(u, v) - 0.7 * r).abs() - 0.3 * r  # outer radius r, inner 0.4 r


def _plus(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    half_width = 0.3 * r
    across = torch.maximum(u.abs() - r, v.abs() - half_width)
    down = torch.maximum(v.abs() - r, u.abs() - half_width)
    return torch.minimum(across, down)


_SHAPE_DISTANCES: tuple[Callable[[Tensor, Tensor, Tensor], Tensor], ...] = (
    _disk, _square, _triangle, _ring, _plus)


def _stripes(dy: Tensor, dx: Tensor, period: Tensor, angle: Tensor, phase: Tensor) -> Tensor:
    """1 on the dark stripes (half of each period), 0 between, with anti-aliased edges."""
    along = dx * torch.cos(angle)[:, None, None] + dy * torch.sin(angle)[:, None, None]
    p = period[:, None, None]
    t = along / p + phase[:, None, None]
    from_centre = (t - torch.floor(t) - 0.5).abs() * p  # px from the nearest stripe centre
    return _edge(p / 4 - from_centre)


def _segment_coverage(ys: Tensor, xs: Tensor, centre: Tensor, length: Tensor, angle: Tensor) -> Tensor:
    """Coverage of a 1-px-wide segment: distance to the segment, edge at 0.5 px."""
    half = (length / 2)[:, None, None]
    direction_x, direction_y = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    rel_x, rel_y = xs - centre[:, 1, None, None], ys - centre[:, 0, None, None]
    along = (rel_x * direction_x + rel_y * direction_y).clamp(-half, half)
    distance = torch.hypot(rel_x - along * direction_x, rel_y - along * direction_y)
    return _edge(0.5 - distance)
