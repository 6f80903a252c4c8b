"""Decoder fine-tuning pieces: the seam and pattern scores, the classifier perceptual distance, the
convolutional refiner, and stage 2 on a pixel-head (single-stage) tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training_runs import finetune_recipe
from titok.errors import ConfigError
from titok.losses import PerceptualLoss
from titok.losses.classifier_distance import ClassifierFeatureDistance
from titok.losses.lattice import lattice_penalty, seam_penalty
from titok.losses.reconstruction import LossConfig, Stage2Loss
from titok.metrics.pattern import LatticeScore, PatternScore, lattice_score, pattern_score
from titok.metrics.seams import SeamScore, seam_score
from titok.models.classifier import Classifier, ClassifierConfig
from titok.models.config import TiTokConfig
from titok.models.refiner import ConvRefiner
from titok.models.titok import TiTok
from titok.training import make_task, train

RECIPES = Path(__file__).resolve().parents[1] / "src" / "titok" / "recipes"


def _smooth(n: int = 4, size: int = 32) -> torch.Tensor:
    low = torch.rand(n, 3, 5, 5)  # 5 knots over 32 px: no structure aligned with 8 px blocks
    return torch.nn.functional.interpolate(low, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


# ---------------------------------------------------------------------------- seam score


def test_seam_score_is_about_one_without_blocks_and_high_with_them() -> None:
    assert seam_score(_smooth(), 8) == pytest.approx(1.0, abs=0.1)
    blocks = torch.rand(2, 3, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)
    assert seam_score(blocks + 0.01 * torch.rand(2, 3, 32, 32), 8) > 10


def test_seam_score_counts_only_the_block_borders() -> None:
    # A single vertical edge between columns 7 and 8 (a border for patch 8, inside a block for 16).
    image = torch.zeros(1, 1, 32, 32)
    image[..., 8:] = 1.0
    image = image + 0.001 * torch.arange(32.0)  # a small ramp so the inside steps are not zero
    assert seam_score(image, 8) > 50
    assert seam_score(image, 16) < 1.0  # for 16 px blocks the edge is inside one


def test_seam_score_accumulates_over_batches_and_validates() -> None:
    images = _smooth(6)
    whole = seam_score(images, 8)
    acc = SeamScore(8)
    acc.update(images[:2])
    acc.update(images[2:])
    assert acc.compute() == pytest.approx(whole, rel=1e-5)
    assert SeamScore(8).compute() != SeamScore(8).compute()  # NaN before any update
    with pytest.raises(ValueError, match="at least 2"):
        SeamScore(1)
    with pytest.raises(ValueError, match="B, C, H, W"):
        acc.update(torch.rand(3, 8, 8))


# ---------------------------------------------------------------------------- pattern score


def test_pattern_score_sees_a_texture_repeated_in_every_block_and_not_image_content() -> None:
    torch.manual_seed(0)
    content = _smooth(16) + 0.05 * torch.rand(16, 3, 32, 32)  # detail at any position: noise floor
    floor = pattern_score(content, 8)
    assert floor < 2.5 / (16 * 16) ** 0.5  # about 1 / sqrt(images x blocks)
    lattice = 0.05 * torch.rand(1, 3, 8, 8).repeat(16, 1, 4, 4)  # one texture in every block
    assert pattern_score(lattice, 8) == pytest.approx(1.0, abs=0.02)
    assert pattern_score(content + lattice, 8) > 10 * floor
    # Invisible to the seam score: a lattice has no larger steps at the block borders.
    assert seam_score(content + lattice, 8) == pytest.approx(seam_score(lattice, 8), rel=0.25)
    # A texture locked to another period than the block's is not counted as this block's.
    shifted = content + 0.05 * torch.rand(1, 3, 5, 5).repeat(16, 1, 7, 7)[..., :32, :32]
    assert pattern_score(shifted, 8) < 3 * floor


def test_pattern_score_accumulates_over_batches_and_validates() -> None:
    images = _smooth(6) + 0.05 * torch.rand(6, 3, 32, 32)
    acc = PatternScore(8)
    acc.update(images[:2])
    acc.update(images[2:])
    assert acc.compute() == pytest.approx(pattern_score(images, 8), rel=1e-5)
    assert PatternScore(8).compute() != PatternScore(8).compute()  # NaN before any update
    with pytest.raises(ValueError, match="at least 2"):
        PatternScore(1)
    with pytest.raises(ValueError, match="not a multiple"):
        acc.update(torch.rand(1, 3, 30, 32))


def _lattice_cases() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Originals (smooth + fine noise), their blur, one 8-px texture in every block, and that
    texture with its sign following the image (half of each image negative)."""
    torch.manual_seed(0)
    originals = _smooth(16) + 0.05 * torch.rand(16, 3, 32, 32)
    blur = torch.nn.functional.avg_pool2d(originals, 3, stride=1, padding=1, count_include_pad=False)
    lattice = (0.05 * (torch.rand(1, 3, 8, 8) - 0.5)).repeat(16, 1, 4, 4)
    sign = torch.ones(16, 1, 32, 32)
    sign[::2, :, :, :16] = -1
    sign[1::2, :, :, 16:] = -1
    return originals, blur, lattice, lattice * sign


def test_lattice_score_sees_a_lattice_whose_sign_follows_the_image() -> None:
    originals, blur, lattice, modulated = _lattice_cases()
    assert abs(lattice_score(originals, 8)) < 0.05 and abs(lattice_score(blur, 8)) < 0.08
    assert lattice_score(blur + lattice, 8) > 0.6
    # The block fold averages the modulated lattice away; the lag covariance does not.
    assert pattern_score(blur + modulated, 8) < 2 * pattern_score(blur, 8)
    assert lattice_score(blur + modulated, 8) > 0.4
    # Another period than the patch's is not this patch's lattice.
    other = (0.05 * (torch.rand(1, 3, 5, 5) - 0.5)).repeat(16, 1, 7, 7)[..., :32, :32]
    assert abs(lattice_score(blur + other, 8)) < 0.1
    acc = LatticeScore(8)
    acc.update(originals[:5])
    acc.update(originals[5:])
    assert acc.compute() == pytest.approx(lattice_score(originals, 8), rel=1e-4)
    assert LatticeScore(8).compute() != LatticeScore(8).compute()  # NaN before any update
    with pytest.raises(ValueError, match="at least 2"):
        LatticeScore(1)
    with pytest.raises(ValueError, match="too small"):
        acc.update(torch.rand(1, 3, 9, 32))


def test_lattice_penalty_removes_a_lattice_and_leaves_image_content_alone() -> None:
    originals, blur, lattice, modulated = _lattice_cases()
    assert float(lattice_penalty(originals, originals, 8)) < 0.01
    assert float(lattice_penalty(blur, originals, 8)) < 0.01  # a blurry decoder: no lattice
    assert float(lattice_penalty(blur + lattice, originals, 8)) > 0.3
    assert float(lattice_penalty(blur + modulated, originals, 8)) > 0.1
    # Descending it removes the lattice and changes little else.
    for painted in (lattice, modulated):
        rec = (blur + painted).requires_grad_(True)
        step = torch.optim.Adam([rec], lr=2e-3)
        for _ in range(60):
            step.zero_grad()
            lattice_penalty(rec, originals, 8).backward()
            step.step()
        assert lattice_score(rec.detach(), 8) < 0.3 * lattice_score(blur + painted, 8)
        assert (rec.detach() - blur).norm() < 1.5 * painted.norm()
    with pytest.raises(ValueError, match="too small"):
        lattice_penalty(torch.rand(1, 3, 9, 32), torch.rand(1, 3, 9, 32), 8)
    # In the loss: a named weight, logged, and only for a decoder that has patches.
    config = LossConfig(perceptual_loss="none", lattice_weight=2.0, discriminator_start=10)
    with pytest.raises(ConfigError, match="lattice_weight"):
        Stage2Loss(config)
    _, logs = Stage2Loss(config, patch_size=8).generator_loss(originals, blur + lattice, 0.0, 0)
    assert float(logs["lattice"]) == pytest.approx(2.0 * float(lattice_penalty(blur + lattice, originals, 8)))


def test_seam_penalty_removes_block_seams_and_spares_natural_images() -> None:
    originals, blur, _, _ = _lattice_cases()
    # Every 8-px block offset by its own random amount: steps at the borders, of random sign.
    torch.manual_seed(1)
    offsets = 0.2 * (torch.rand(16, 3, 4, 4) - 0.5)
    seams = blur + offsets.repeat_interleave(8, dim=-1).repeat_interleave(8, dim=-2)
    assert seam_score(seams, 8) > 1.5 * seam_score(originals, 8)
    assert float(seam_penalty(originals, originals, 8)) == 0.0
    assert float(seam_penalty(blur, originals, 8)) < 0.01
    assert float(seam_penalty(seams, originals, 8)) > 0.1
    rec = seams.clone().requires_grad_(True)
    step = torch.optim.Adam([rec], lr=2e-3)
    for _ in range(60):
        step.zero_grad()
        seam_penalty(rec, originals, 8).backward()
        step.step()
    assert seam_score(rec.detach(), 8) < seam_score(originals, 8) + 0.1
    assert (rec.detach() - seams).norm() < (seams - blur).norm()
    with pytest.raises(ValueError, match="shapes differ"):
        seam_penalty(seams, originals[:2], 8)
    config = LossConfig(perceptual_loss="none", seam_weight=3.0)
    with pytest.raises(ConfigError, match="seam_weight"):
        Stage2Loss(config)
    _, logs = Stage2Loss(config, patch_size=8).generator_loss(originals, seams, 0.0, 0)
    assert float(logs["seam"]) == pytest.approx(3.0 * float(seam_penalty(seams, originals, 8)))


# ---------------------------------------------------------------------------- classifier distance


def _classifier() -> Classifier:
    return Classifier(ClassifierConfig(name="tiny", image_size=32, widths=(8, 16), num_classes=2)).eval()


def test_classifier_distance_is_zero_on_equal_images_and_has_gradients() -> None:
    distance = ClassifierFeatureDistance(_classifier())
    x, y = _smooth(), _smooth()
    assert torch.allclose(distance(x, x), torch.zeros(4), atol=1e-6)
    x = x.requires_grad_(True)
    d = distance(x, y)
    assert d.shape == (4,) and (d > 0).all()
    d.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in distance.parameters())
    distance.train()
    assert not distance.classifier.training  # BatchNorm keeps its running statistics
    with pytest.raises(ValueError, match="taps"):
        ClassifierFeatureDistance(_classifier(), taps=(5,))


def test_classifier_perceptual_loss_reads_a_saved_network(tmp_path: Path) -> None:
    folder = _classifier().save_pretrained(tmp_path / "net")
    loss = PerceptualLoss("classifier", classifier_network=folder)
    assert loss.active
    value, parts = loss(_smooth(), _smooth())
    assert value > 0 and set(parts) == {"classifier"}
    stage2 = Stage2Loss(LossConfig(perceptual_loss="classifier", perceptual_network=str(folder)))
    assert stage2.perceptual is not None and stage2.perceptual.classifier is not None
    with pytest.raises(ConfigError, match="perceptual_network"):
        LossConfig(perceptual_loss="classifier")

    # perceptual_taps: only the chosen feature maps count (here the coarse one, 8 px).
    coarse = Stage2Loss(
        LossConfig(perceptual_loss="classifier", perceptual_network=str(folder), perceptual_taps=[2])
    )
    assert coarse.perceptual is not None and coarse.perceptual.classifier is not None
    assert coarse.perceptual.classifier.taps == (2,)
    x, y = _smooth(), _smooth()
    value, _ = coarse.perceptual(x, y)
    only_tap_2 = ClassifierFeatureDistance(Classifier.from_pretrained(folder), taps=(2,))(x, y).mean()
    assert value == pytest.approx(float(only_tap_2), rel=1e-5)
    assert value != pytest.approx(float(loss(x, y)[0]), rel=1e-3)  # all maps: another distance
    with pytest.raises(ConfigError, match="perceptual_taps"):
        Stage2Loss(
            LossConfig(perceptual_loss="classifier", perceptual_network=str(folder), perceptual_taps=[5])
        )


# ---------------------------------------------------------------------------- refiner


def _tiny_pixels_config(**overrides: object) -> TiTokConfig:
    base = dict(
        image_size=32, patch_size=8, encoder_width=32, encoder_depth=1, encoder_heads=2,
        decoder_width=32, decoder_depth=1, decoder_heads=2, num_latent_tokens=4,
        codebook_size=16, decoder_head="pixels",
    )  # fmt: skip
    return TiTokConfig(**{**base, **overrides})


def test_refiner_starts_as_the_identity_and_needs_the_pixels_head() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(ConvRefiner(8)(x), x)
    plain = TiTok(_tiny_pixels_config()).eval()
    refined = TiTok(_tiny_pixels_config(refine_channels=8)).eval()
    state = plain.state_dict()
    state.update({k: v for k, v in refined.state_dict().items() if k.startswith("refiner.")})
    refined.load_state_dict(state)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain(images).decoded, refined(images).decoded)
    with pytest.raises(ConfigError, match="refine_channels"):
        _tiny_pixels_config(refine_channels=8, decoder_head="proxy")
    with pytest.raises(ConfigError, match="refine_channels"):
        _tiny_pixels_config(refine_channels=-1)


# ---------------------------------------------------------------------------- stage 2 on a pixels head


def test_stage2_fine_tunes_a_single_stage_decoder_with_a_new_refiner(pictures: Path, tmp_path: Path) -> None:
    start = TiTok(_tiny_pixels_config(image_size=16, patch_size=4))
    start_dir = start.save_pretrained(tmp_path / "start")
    net = Classifier(ClassifierConfig(name="tiny", image_size=16, widths=(8, 16), num_classes=2))
    net_dir = net.save_pretrained(tmp_path / "net")
    recipe = finetune_recipe(
        start_dir, pictures, net_dir, "model.decoder_head=pixels", "model.refine_channels=4"
    )
    result = train(make_task(recipe), output_dir=tmp_path / "run")
    assert "gan_raw" in result.history[-1] and "discriminator/hinge" in result.history[-1]
    assert result.history[0]["perceptual"] > 0
    end = TiTok.from_pretrained(result.export_dir)
    assert end.config.refine_channels == 4 and end.config.decoder_head == "pixels"
    before, after = start.state_dict(), end.state_dict()
    for name, value in before.items():
        if name.startswith(("encoder.", "quantize.", "latent_tokens")):
            assert torch.equal(after[name], value), f"frozen {name} changed"
    assert any(not torch.equal(after[n], before[n]) for n in before if n.startswith("decoder."))
    assert after["refiner.conv_out.weight"].abs().sum() > 0, "the refiner did not train"
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(start.eval().encode(images), end.eval().encode(images)), "the tokens changed"
