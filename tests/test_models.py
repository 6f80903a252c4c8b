"""TiTok architecture: shapes, parameter layout against the published checkpoints, quantizers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from titok.errors import ConfigError
from titok.loading import mismatch_report
from titok.models import VQGAN, DiagonalGaussian, TiTok, TiTokConfig, VectorQuantizer, tokenizer_presets
from titok.models.transformer import ResidualAttentionBlock
from titok.models.vqgan import VQGANConfig

#: Our preset -> entry of the reference file.
PUBLISHED = {
    "titok-l32": "titok_l32",
    "titok-b64": "titok_b64",
    "titok-s128": "titok_s128",
    "titok-l32-stage1": "titok_l32-stage1",
    "titok-b64-stage1": "titok_b64-stage1",
    "titok-s128-stage1": "titok_s128-stage1",
    "titok-bl64-vq8k": "titok_bl64_vq8k",
    "titok-bl128-vq8k": "titok_bl128_vq8k",
    "titok-sl256-vq8k": "titok_sl256_vq8k",
    "titok-ll32-vae": "titok_ll32_vae_c16",
    "titok-bl64-vae": "titok_bl64_vae_c16",
    "titok-bl128-vae": "titok_bl128_vae_c16",
}


def shapes(module: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_published_layout_matches_reference(preset: str, reference: dict) -> None:
    with torch.device("meta"):
        model = TiTok.from_preset(preset)
    ref = reference[f"tokenizer/{PUBLISHED[preset]}"]["state_dict"]
    assert mismatch_report(ref, shapes(model)) is None
    assert sum(p.numel() for p in model.state_dict().values()) == sum(math.prod(s) for s in ref.values())


def test_vqgan_layout_matches_reference(reference: dict) -> None:
    with torch.device("meta"):
        model = VQGAN()
    assert (
        mismatch_report(reference["vqgan/maskgit-vqgan-imagenet-f16-256"]["state_dict"], shapes(model))
        is None
    )


def test_every_published_config_converts(reference: dict) -> None:
    for preset, entry in PUBLISHED.items():
        cfg = TiTokConfig.from_official(reference[f"tokenizer/{entry}"]["config"])
        assert cfg == tokenizer_presets()[preset].build_config()


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_output_shapes_of_published_presets(preset: str) -> None:
    with torch.device("meta"):
        model = TiTok.from_preset(preset)
        x = torch.empty(2, 3, 256, 256)
        out = model(x)
    c = model.config
    if c.decoder_head == "proxy":
        assert out.decoded.shape == (2, c.num_proxy_codes, 16, 16)
    else:
        assert out.decoded.shape == (2, 3, 256, 256)
    assert out.quantizer.quantized.shape == (2, c.num_latent_tokens, c.token_size)


@pytest.mark.parametrize("preset,size", [("titok-tiny-32", 32), ("titok-tiny-64", 64)])
def test_tiny_presets_encode_decode(preset: str, size: int) -> None:
    model = TiTok.from_preset(preset).eval()
    images = torch.rand(3, 3, size, size)
    tokens = model.encode(images)
    assert tokens.dtype == torch.int64 and tokens.shape == (3, model.config.num_latent_tokens)
    assert int(tokens.max()) < model.config.codebook_size
    out = model.decode(tokens)
    assert out.shape == (3, 3, size, size) and float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize("size,patch", [(48, 8), (40, 4), (64, 16)])
def test_any_multiple_of_patch_size(size: int, patch: int) -> None:
    model = TiTok.from_preset("titok-tiny-32", image_size=size, patch_size=patch)
    out = model(torch.rand(1, 3, size, size))
    assert out.decoded.shape == (1, 3, size, size)


def test_image_size_not_multiple_of_patch_is_refused() -> None:
    from titok.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of patch_size"):
        TiTok.from_preset("titok-tiny-32", image_size=30)


def test_bfloat16_autocast_inference_close_to_float32() -> None:
    model = TiTok.from_preset("titok-tiny-32").eval()
    x = torch.rand(2, 3, 32, 32)
    z32 = model.encode_latents(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z16 = model.encode_latents(x)
    assert z16.dtype == torch.bfloat16
    assert torch.allclose(z16.float(), z32, atol=0.1, rtol=0.1)
    images = model.decode(model.encode(x, dtype=torch.bfloat16), dtype=torch.bfloat16)
    assert images.dtype == torch.float32 and images.shape == x.shape


# --------------------------------------------------------------------------- attention & layout


def test_attention_block_equals_torch_multihead_attention() -> None:
    """Our packed-projection SDPA attention computes what nn.MultiheadAttention computes."""
    block = ResidualAttentionBlock(64, 4).eval()
    mha = nn.MultiheadAttention(64, 4).eval()
    mha.in_proj_weight.data.copy_(block.attn.in_proj_weight.data)
    mha.in_proj_bias.data.copy_(torch.randn(192))
    block.attn.in_proj_bias.data.copy_(mha.in_proj_bias.data)
    mha.out_proj.load_state_dict(block.attn.out_proj.state_dict())
    x = torch.randn(2, 10, 64)
    h = block.ln_1(x)
    ref_attn = mha(h.transpose(0, 1), h.transpose(0, 1), h.transpose(0, 1), need_weights=False)[0].transpose(
        0, 1
    )
    ref = x + ref_attn
    ref = ref + block.mlp.c_proj(F.gelu(block.mlp.c_fc(block.ln_2(ref))))
    assert torch.allclose(block(x), ref, atol=1e-5)


def _authors_style_projection(lat: torch.Tensor, conv: nn.Conv2d, legacy: bool) -> torch.Tensor:
    """The projection as the published code writes it: (B, K, D) viewed as a 2D map, 1x1 conv."""
    b, k, d = lat.shape
    x = lat.reshape(b, d, k, 1) if legacy else lat.reshape(b, k, d, 1).permute(0, 2, 1, 3)
    out = conv(x)  # (B, C, K, 1)
    return out.reshape(b, -1, 1, k)[:, :, 0].transpose(1, 2)  # (B, K, C)


@pytest.mark.parametrize("legacy", [True, False])
def test_encoder_projection_layout(legacy: bool) -> None:
    model = TiTok.from_preset("titok-tiny-32", legacy_layout=legacy).eval()
    enc = model.encoder
    x = torch.rand(2, 3, 32, 32)
    captured = {}
    enc.ln_post.register_forward_hook(lambda m, i, o: captured.setdefault("lat", o))
    z = model.encode_latents(x)
    expected = _authors_style_projection(captured["lat"], enc.conv_out, legacy)
    assert torch.allclose(z, expected, atol=1e-5)


def test_vqgan_head_softmax_weights_the_proxy_codebook() -> None:
    cfg = TiTokConfig(
        image_size=32,
        patch_size=4,
        encoder_width=64,
        encoder_depth=1,
        encoder_heads=2,
        decoder_width=64,
        decoder_depth=1,
        decoder_heads=2,
        num_latent_tokens=8,
        token_size=8,
        codebook_size=64,
        decoder_head="vqgan",
        num_proxy_codes=32,
        legacy_layout=True,
        pixel_decoder=VQGANConfig(
            channel_mult=(1, 1, 2), hidden_channels=32, num_res_blocks=1, z_channels=32, codebook_size=32
        ),
    )
    model = TiTok(cfg).eval()
    q = torch.randn(2, 8, 8)
    logits = model.decoder(q)
    assert logits.shape == (2, 32, 8, 8)
    codes = torch.einsum("nchw,cd->ndhw", logits.softmax(1), model.pixel_quantize.embedding.weight)
    assert torch.allclose(model.decode_latents(q), model.pixel_decoder(codes), atol=1e-5)


def test_vqgan_encode_decode_shapes() -> None:
    cfg = VQGANConfig(
        channel_mult=(1, 2, 2), hidden_channels=32, num_res_blocks=1, z_channels=16, codebook_size=64
    )
    vq = VQGAN(cfg).eval()
    x = torch.rand(2, 3, 32, 32)
    ids = vq.encode(x)
    assert ids.shape == (2, 8, 8)
    assert vq.decode(ids).shape == (2, 3, 32, 32)
    rec, q = vq(x)
    assert rec.shape == x.shape and q.indices.shape == (2, 64)


# --------------------------------------------------------------------------- quantizers


def test_vq_nearest_code_is_cosine_nearest_by_brute_force() -> None:
    vq = VectorQuantizer(97, 12, use_l2_norm=True)
    nn.init.normal_(vq.embedding.weight)
    z = torch.randn(4, 20, 12)
    got = vq.nearest(z)
    zn, en = F.normalize(z, dim=-1), F.normalize(vq.embedding.weight.detach(), dim=-1)
    brute = torch.stack(
        [
            torch.tensor(
                [min(range(97), key=lambda j: float((zn[b, i] - en[j]).pow(2).sum())) for i in range(20)]
            )
            for b in range(4)
        ]
    )
    assert torch.equal(got, brute)
    assert torch.equal(got, (zn @ en.t()).argmax(-1))


def test_vq_without_l2_is_euclidean_nearest() -> None:
    vq = VectorQuantizer(50, 6, use_l2_norm=False)
    nn.init.normal_(vq.embedding.weight)
    z = torch.randn(3, 7, 6)
    d = torch.cdist(z.reshape(-1, 6), vq.embedding.weight)
    assert torch.equal(vq.nearest(z).reshape(-1), d.argmin(1))


def test_vq_straight_through_gradient_reaches_the_encoder() -> None:
    model = TiTok.from_preset("titok-tiny-32")
    out = model(torch.rand(2, 3, 32, 32))
    out.decoded.mean().backward()
    assert model.encoder.conv_out.weight.grad is not None
    assert model.encoder.conv_out.weight.grad.abs().sum() > 0
    assert model.latent_tokens.grad.abs().sum() > 0


def test_vq_losses_equal_their_formulas() -> None:
    vq = VectorQuantizer(16, 4, commitment_cost=0.25, use_l2_norm=True)
    nn.init.normal_(vq.embedding.weight)
    z = torch.randn(2, 5, 4, requires_grad=True)
    out = vq(z)
    zn = F.normalize(z.detach(), dim=-1)
    q = F.normalize(vq.embedding.weight.detach(), dim=-1)[out.indices]
    assert torch.allclose(out.codebook_loss, ((q - zn) ** 2).mean())
    assert torch.allclose(out.commitment_loss, 0.25 * ((q - zn) ** 2).mean())
    assert torch.allclose(out.loss, 1.25 * ((q - zn) ** 2).mean())
    # Forward value is the code; the gradient passes straight through to z.
    assert torch.allclose(out.quantized, q, atol=1e-6)
    out.quantized.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_diagonal_gaussian_kl_mode_and_sample() -> None:
    g = DiagonalGaussian()
    mean, logvar = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    z = torch.cat([mean, logvar], dim=-1)
    mode = g(z, sample=False)
    assert torch.allclose(mode.quantized, mean)
    expected_kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2)).mean()
    assert torch.allclose(mode.kl, expected_kl)
    torch.manual_seed(1)
    s1 = g(z).quantized
    assert not torch.allclose(s1, mean)
    zero = g(torch.zeros(2, 3, 10), sample=False)
    assert float(zero.kl) == 0.0


def test_vae_tokenizer_encode_returns_latents() -> None:
    model = TiTok.from_preset("titok-tiny-32", quantize_mode="vae", token_size=8).eval()
    x = torch.rand(2, 3, 32, 32)
    lat = model.encode(x)
    assert lat.dtype == torch.float32 and lat.shape == (2, 16, 8)
    assert torch.equal(lat, model.encode(x))  # mode is deterministic
    assert not torch.equal(lat, model.encode(x, sample=True))
    assert model.decode(lat).shape == (2, 3, 32, 32)


def test_decoder_embed_init_std_sets_only_that_projection() -> None:
    torch.manual_seed(0)
    authors = TiTok.from_preset("titok-tiny-64")
    torch.manual_seed(0)
    wide = TiTok.from_preset("titok-tiny-64", decoder_embed_init_std=0.3)
    assert authors.decoder.decoder_embed.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert wide.decoder.decoder_embed.weight.std().item() == pytest.approx(0.3, rel=0.15)
    # every weight initialised before it is unchanged; the default keeps the authors' init exactly
    assert torch.equal(authors.encoder.patch_embed.weight, wide.encoder.patch_embed.weight)
    assert torch.equal(
        authors.decoder.transformer[0].mlp.c_fc.weight, wide.decoder.transformer[0].mlp.c_fc.weight
    )
    assert TiTok(wide.config).config.decoder_embed_init_std == 0.3
    with pytest.raises(ConfigError, match="decoder_embed_init_std"):
        TiTokConfig(decoder_embed_init_std=0.0)


def test_init_std_sets_every_linear_and_conv_weight() -> None:
    scaled = TiTok.from_preset("titok-tiny-64", init_std=0.08)
    authors = TiTok.from_preset("titok-tiny-64")
    for model, std in ((scaled, 0.08), (authors, 0.02)):
        assert model.encoder.patch_embed.weight.std().item() == pytest.approx(std, rel=0.15)
        assert model.decoder.transformer[0].mlp.c_fc.weight.std().item() == pytest.approx(std, rel=0.15)
    # decoder_embed follows init_std unless given its own std
    assert scaled.decoder.decoder_embed.weight.std().item() == pytest.approx(0.08, rel=0.15)
    own = TiTok.from_preset("titok-tiny-64", init_std=0.08, decoder_embed_init_std=0.3)
    assert own.decoder.decoder_embed.weight.std().item() == pytest.approx(0.3, rel=0.15)
    with pytest.raises(ConfigError, match="init_std must be > 0"):
        TiTokConfig(init_std=-1.0)


def test_latent_centering_uses_the_batch_mean_in_training_and_the_running_mean_after() -> None:
    from titok.models.centering import LatentCentering

    center = LatentCentering(num_tokens=3, channels=2, momentum=0.5)
    z = torch.randn(8, 3, 2) + torch.tensor([5.0, -3.0])
    out = center(z)
    assert torch.allclose(out.mean(0), torch.zeros(3, 2), atol=1e-5)
    assert torch.allclose(center.running_mean, 0.5 * z.mean(0))
    center.eval()
    one = center(z[:1])
    assert torch.allclose(one, z[:1] - 0.5 * z.mean(0))  # no batch statistics at inference
    assert torch.allclose(center(z)[:1], one)
    with pytest.raises(ValueError, match="momentum"):
        LatentCentering(3, 2, momentum=0.0)
    center.train()
    with pytest.raises(ValueError, match="at least 2 images"):
        center(z[:1])


def test_titok_latent_centering_round_trips_and_is_refused_for_vae(tmp_path) -> None:  # noqa: ANN001
    from titok.training.tasks.stage2 import freeze_tokenizer

    model = TiTok.from_preset("titok-tiny-32", latent_centering=True)
    assert "latent_centering.running_mean" in model.state_dict()
    assert "latent_centering.running_mean" not in TiTok.from_preset("titok-tiny-32").state_dict()
    images = torch.rand(4, 3, 32, 32)
    model.train()
    model(images)  # one training pass moves the running mean
    assert model.latent_centering is not None and model.latent_centering.running_mean.abs().sum() > 0
    model.eval()
    loaded = TiTok.from_pretrained(model.save_pretrained(tmp_path / "m")).eval()
    assert torch.equal(loaded.encode(images), model.encode(images))
    assert torch.equal(loaded.encode(images[:1]), model.encode(images)[:1])
    # stage 2 keeps what makes the tokens fixed, the running mean included
    before = model.latent_centering.running_mean.clone()
    model.train()
    freeze_tokenizer(model)
    model(images)
    assert torch.equal(model.latent_centering.running_mean, before)
    with pytest.raises(ConfigError, match="latent_centering"):
        TiTokConfig(quantize_mode="vae", latent_centering=True)


def test_dead_code_restart_initialises_the_codebook_from_the_batch_latents() -> None:
    vq = VectorQuantizer(16, 4, dead_code_threshold=0.1).train()
    z = torch.randn(2, 8, 4)
    out = vq(z)
    # Every code starts dead: all 16 were restarted on latents of this batch (normalised).
    latents = torch.nn.functional.normalize(z, dim=-1).reshape(-1, 4)
    codes = vq.embedding.weight.detach()
    assert all((latents - c).norm(dim=1).min() < 1e-6 for c in codes)
    assert torch.equal(vq.restart.usage, torch.ones(16))
    # The returned ids were matched against the restarted codebook.
    assert torch.equal(out.indices, vq.nearest(z))
    out.loss.backward()  # the restart did not break the autograd graph


def test_dead_code_restart_replaces_only_codes_whose_usage_fell_below_the_threshold() -> None:
    vq = VectorQuantizer(4, 2, use_l2_norm=False, dead_code_threshold=0.5, usage_decay=0.5).train()
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
        vq.restart.usage.fill_(1.0)
    z = torch.tensor([[[1.0, 0.1], [0.1, 1.0]]]).repeat(4, 1, 1)  # only codes 0 and 1 are used
    vq(z)
    # usage: used codes 0.5 + 0.5 * 2 = 1.5, unused 0.5 (not below 0.5): nothing restarted yet.
    assert torch.allclose(vq.restart.usage, torch.tensor([1.5, 1.5, 0.5, 0.5]))
    assert torch.equal(vq.embedding.weight[2:], torch.tensor([[-1.0, 0.0], [0.0, -1.0]]))
    vq(z)  # unused codes fall to 0.25: restarted on batch latents, usage reset to 1
    assert torch.equal(vq.restart.usage[2:], torch.ones(2))
    for row in vq.embedding.weight[2:].detach():
        assert any(torch.equal(row, v) for v in z.reshape(-1, 2))
    assert torch.equal(vq.embedding.weight[:2], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    vq.eval()
    before = vq.embedding.weight.detach().clone()
    vq(-z)
    assert torch.equal(vq.embedding.weight, before)  # no restarts at inference


def test_dead_code_restart_is_in_the_state_dict_only_when_on_and_validated() -> None:
    on = TiTok.from_preset("titok-tiny-32", dead_code_threshold=0.03)
    assert "quantize.restart.usage" in on.state_dict()
    assert "quantize.restart.usage" not in TiTok.from_preset("titok-tiny-32").state_dict()
    with pytest.raises(ConfigError, match="dead_code_threshold"):
        TiTok.from_preset("titok-tiny-32", dead_code_threshold=-1.0)
    with pytest.raises(ConfigError, match="dead_code_threshold"):
        TiTok.from_preset("titok-tiny-32", quantize_mode="vae", dead_code_threshold=0.03)
    with pytest.raises(ConfigError, match="code_usage_decay"):
        TiTok.from_preset("titok-tiny-32", code_usage_decay=1.0)
