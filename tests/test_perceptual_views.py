"""Views of the perceptual pair (:mod:`titok.losses.perceptual_views`): the random crop, the flips
and quarter turns, the blur, and how :class:`Stage2Loss` applies them."""

from __future__ import annotations

import pytest
import torch

from titok.errors import ConfigError
from titok.losses.perceptual_views import binomial_blur, dihedral, shared_dihedral, shared_random_crop
from titok.losses.reconstruction import LossConfig, Stage2Loss


def test_shared_random_crop_cuts_both_images_at_one_offset() -> None:
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    y = x + 1000
    assert shared_random_crop(x, y, 0) == (x, y)
    seen = set()
    for seed in range(40):
        a, b = shared_random_crop(x, y, 3, torch.Generator().manual_seed(seed))
        assert a.shape == b.shape == (2, 3, 13, 13)
        assert torch.equal(b - a, torch.full_like(a, 1000.0))  # the same window of both
        dy, dx = divmod(int(a[0, 0, 0, 0]), 16)
        assert torch.equal(a, x[..., dy : dy + 13, dx : dx + 13])
        seen.add((dy, dx))
    assert len(seen) > 8 and all(0 <= v <= 3 for pair in seen for v in pair)
    with pytest.raises(ValueError, match="leaves nothing"):
        shared_random_crop(x, y, 16)
    with pytest.raises(ConfigError, match="perceptual_shift"):
        LossConfig(perceptual_shift=-1)


def test_dihedral_gives_the_eight_symmetries_of_the_square() -> None:
    image = torch.arange(16.0).reshape(1, 1, 4, 4)  # no symmetry of its own
    views = [dihedral(image, e) for e in range(8)]
    assert torch.equal(views[0], image)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[1], image.flip(-1))  # bit 0: horizontal flip
    assert torch.equal(views[2], image.flip(-2))  # bit 1: vertical flip
    assert torch.equal(views[4], image.transpose(-1, -2))  # bit 2: transpose
    # A vertical stripe is horizontal under the quarter turns and vertical under the rest.
    stripe = torch.zeros(1, 1, 4, 4)
    stripe[..., 1] = 1.0
    for e in range(8):
        columns_lit = int(dihedral(stripe, e).sum(dim=-2).gt(0).sum())
        assert columns_lit == (4 if e & 4 else 1)
    with pytest.raises(ValueError, match="in \\[0, 8\\)"):
        dihedral(image, 8)


def test_shared_dihedral_turns_both_images_of_a_pair_alike_and_draws_per_pair() -> None:
    x = torch.rand(64, 3, 8, 8)
    y = x + 10.0
    a, b = shared_dihedral(x, y, torch.Generator().manual_seed(0))
    assert a.shape == b.shape == x.shape
    assert torch.allclose(b - a, torch.full_like(a, 10.0))  # one transform per pair
    used = []
    for i in range(64):
        matches = [e for e in range(8) if torch.equal(a[i], dihedral(x[i], e))]
        assert len(matches) == 1
        used.append(matches[0])
    assert len(set(used)) == 8  # drawn per pair, every element in a batch of 64
    with pytest.raises(ValueError, match="square"):
        shared_dihedral(torch.rand(2, 3, 8, 6), torch.rand(2, 3, 8, 6))


def test_binomial_blur_keeps_flat_images_and_removes_pixel_scale_stripes() -> None:
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(binomial_blur(flat, 5), flat)
    stripes = torch.zeros(1, 3, 16, 16)
    stripes[..., ::2] = 1.0  # the highest frequency a stride-2 stem aliases
    blurred = binomial_blur(stripes, 3)
    assert blurred[..., 1:-1].std() < 1e-6 and blurred[..., 1:-1].mean() == pytest.approx(0.5)
    smooth = torch.linspace(0, 1, 16).expand(1, 3, 16, 16)
    assert torch.allclose(binomial_blur(smooth, 3)[..., 1:-1], smooth[..., 1:-1], atol=1e-6)
    assert binomial_blur(stripes, 0) is stripes
    with pytest.raises(ValueError, match="odd"):
        binomial_blur(stripes, 4)


def test_stage2_loss_views_the_perceptual_pair_as_configured() -> None:
    x, y = torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)
    plain = Stage2Loss(LossConfig(perceptual_loss="none"))
    assert plain.perceptual_view(x, y) == (x, y)  # every view off: the images themselves
    torch.manual_seed(0)
    turned = Stage2Loss(LossConfig(perceptual_loss="none", perceptual_dihedral=True, perceptual_blur=3))
    a, b = turned.perceptual_view(x, x + 1.0)
    assert torch.allclose(b - a, torch.ones_like(a), atol=1e-6)
    assert not torch.allclose(a, binomial_blur(x, 3))  # some pairs were turned
    for bad in (2, -1):
        with pytest.raises(ConfigError, match="perceptual_blur"):
            LossConfig(perceptual_blur=bad)
