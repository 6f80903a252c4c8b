"""The "conv" decoder head: the ViT decoder's patch outputs upsampled to pixels by convolutions,
and decoder fine-tuning that swaps a trained model's linear pixel head for it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training_runs import finetune_recipe
from titok.errors import ConfigError
from titok.models.classifier import Classifier, ClassifierConfig
from titok.models.config import TiTokConfig
from titok.models.titok import TiTok
from titok.models.upsampler import UpBlock
from titok.models.vqgan import VQGANConfig
from titok.training import load_recipe, make_task, train
from titok.training.tasks.stage2 import swap_head

RECIPES = Path(__file__).resolve().parents[1] / "src" / "titok" / "recipes"
CONV_CHANNELS = (16, 8)  # two 2x upsamplings: patch_size 4


def _config(**overrides: object) -> TiTokConfig:
    base = dict(
        image_size=16, patch_size=4, encoder_width=32, encoder_depth=1, encoder_heads=2,
        decoder_width=32, decoder_depth=1, decoder_heads=2, num_latent_tokens=4,
        codebook_size=16, decoder_head="conv", conv_channels=CONV_CHANNELS,
    )  # fmt: skip
    return TiTokConfig(**{**base, **overrides})


def test_conv_head_decodes_pixels_and_prefixes() -> None:
    model = TiTok(_config(variable_length=True)).eval()
    images = torch.rand(3, 3, 16, 16)
    assert model(images).decoded.shape == (3, 3, 16, 16)
    tokens = model.encode(images)
    for k in (1, 2, 4):
        out = model.decode(tokens[:, :k])
        assert out.shape == (3, 3, 16, 16) and out.min() >= 0 and out.max() <= 1
    assert model.decoder.ffn.out_channels == CONV_CHANNELS[0]
    assert not any(k.startswith(("pixel_decoder.", "pixel_quantize.")) for k in model.state_dict())


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_conv_head_paints_no_patch_texture_on_a_flat_input(mode: str) -> None:
    """The property it exists for: patch features that are all equal give an image with no
    period (the linear pixel head gives the same 8x8 pattern in every patch)."""
    torch.manual_seed(0)
    conv = TiTok(_config(conv_upsample=mode)).eval()
    pixels = TiTok(_config(decoder_head="pixels")).eval()
    # One feature vector at every patch of a 24x24 grid (96 px), read away from the borders,
    # which the convolutions' zero padding reaches about 20 px into.
    flat = torch.randn(1, 32, 1, 1).expand(1, 32, 24, 24)
    with torch.no_grad():
        conv_out = conv.upsampler(conv.decoder.ffn(flat))[0]
        pixel_out = pixels.decoder.conv_out(pixels.decoder.ffn(flat))[0]
    inner = (slice(None), slice(40, 56), slice(40, 56))
    assert conv_out[inner].std(dim=(1, 2)).max() < 1e-5
    assert pixel_out[inner].std(dim=(1, 2)).max() > 1e-3


def test_conv_head_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="upsample by 8 but patch_size is 4"):
        _config(conv_channels=(16, 8, 8))
    with pytest.raises(ConfigError, match="one positive width"):
        _config(conv_channels=(16, 0))
    with pytest.raises(ConfigError, match="multiple of 32"):
        _config(decoder_head="vqgan", pixel_decoder=VQGANConfig(channel_mult=(1, 1, 2), hidden_channels=24))
    with pytest.raises(ConfigError, match="refine_channels"):
        _config(refine_channels=8)
    with pytest.raises(ConfigError, match="conv_upsample: expected one of"):
        _config(conv_upsample="bicubic")


def test_bilinear_upsampling_interpolates_across_patch_borders() -> None:
    """Nearest upsampling copies each patch feature into a block (a step at every border);
    bilinear puts values between the neighbours' there."""
    step = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    nearest = UpBlock(1, 1, "nearest")._upsample(step)
    bilinear = UpBlock(1, 1, "bilinear")._upsample(step)
    assert set(nearest.unique().tolist()) == {0.0, 1.0}
    assert bilinear[0, 0, 0].tolist() == [0.0, 0.0, 0.0, 0.25, 0.75, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="mode"):
        UpBlock(1, 1, "bicubic")


def test_swap_head_keeps_the_vit_decoder_and_replaces_only_the_head() -> None:
    old = TiTok(_config(decoder_head="pixels", refine_channels=4))
    new = TiTok(_config())
    state = swap_head(new, old.state_dict(), "pixels")
    new.load_state_dict(state)  # strict: every key of the new model, nothing else
    for name, value in old.state_dict().items():
        if name.startswith(("encoder.", "quantize.", "decoder.transformer.", "decoder.decoder_embed.")):
            assert torch.equal(state[name], value), name
    assert not any(k.startswith("refiner.") for k in state)
    with pytest.raises(ConfigError, match="'conv' cannot become 'pixels'"):
        swap_head(old, new.state_dict(), "conv")


def test_stage2_swaps_a_trained_pixel_head_for_the_conv_head(pictures: Path, tmp_path: Path) -> None:
    start = TiTok(_config(decoder_head="pixels", conv_channels=(64, 32, 32)))
    start_dir = start.save_pretrained(tmp_path / "start")
    net = Classifier(ClassifierConfig(name="tiny", image_size=16, widths=(8, 16), num_classes=2))
    net_dir = net.save_pretrained(tmp_path / "net")
    recipe = finetune_recipe(
        start_dir,
        pictures,
        net_dir,
        "model.refine_channels=0",
        "model.decoder_head=conv",
        "model.conv_channels=[16,8]",
    )
    result = train(make_task(recipe), output_dir=tmp_path / "run")
    end = TiTok.from_pretrained(result.export_dir)
    assert end.config.decoder_head == "conv" and end.config.conv_channels == (16, 8)
    before, after = start.state_dict(), end.state_dict()
    for name, value in before.items():
        if name.startswith(("encoder.", "quantize.", "latent_tokens")):
            assert torch.equal(after[name], value), f"frozen {name} changed"
    assert any(not torch.equal(after[n], before[n]) for n in before if n.startswith("decoder.transformer."))
    assert "upsampler.conv_out.weight" in after and "decoder.conv_out.weight" not in after
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(start.eval().encode(images), end.eval().encode(images)), "the tokens changed"
    assert end.reconstruct(images).shape == (2, 3, 16, 16)


def test_stage2_refuses_a_head_swap_it_cannot_make(pictures: Path, tmp_path: Path) -> None:
    start_dir = TiTok(_config()).save_pretrained(tmp_path / "start")
    recipe = load_recipe(
        RECIPES / "imagenette64_finetune.yaml",
        [f"init_from={start_dir}", f"data.train={pictures}", "model.decoder_head=pixels"],
        mode="stage2",
    )
    with pytest.raises(ConfigError, match="'conv' cannot become 'pixels'"):
        make_task(recipe).build_model(None)  # type: ignore[arg-type]


def test_config_updated_merges_a_partial_pixel_decoder_and_names_unknown_fields() -> None:
    base = _config(decoder_head="vqgan", pixel_decoder=VQGANConfig(channel_mult=(1, 1, 2)))
    new = base.updated(pixel_decoder={"hidden_channels": 64}, num_latent_tokens=8)
    assert new.pixel_decoder.hidden_channels == 64 and new.num_latent_tokens == 8
    assert new.pixel_decoder.channel_mult == (1, 1, 2)  # the rest kept
    assert base.pixel_decoder.hidden_channels == 128  # a copy
    with pytest.raises(ConfigError, match=r"unknown tokenizer config field\(s\) \['tokens'\]"):
        base.updated(tokens=3)
    with pytest.raises(ConfigError, match=r"unknown pixel_decoder field\(s\) \['width'\]"):
        base.updated(pixel_decoder={"width": 3})
