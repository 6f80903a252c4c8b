"""Stage-2 losses: hinge/LeCam values, discriminator shapes, perceptual weights, combined loss."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from titok.errors import CheckpointError, ConfigError
from titok.loading import mismatch_report
from titok.losses import (
    LeCamEMA,
    LossConfig,
    NLayerDiscriminator,
    PerceptualLoss,
    Stage2Loss,
    VGG16Features,
    build_discriminator,
    convnext_small,
    hinge_d_loss,
    hinge_g_loss,
    lecam_loss,
)
from titok.losses import perceptual as perceptual_module
from titok.losses.backbones import ConvNeXt, convnext_state_dict, load_convnext
from titok.losses.perceptual import CONVNEXT_S_WEIGHTS, LPIPSHeads

TINY_CONVNEXT = dict(depths=(1, 1), dims=(8, 16), num_classes=10)


def random_state_dict(module: torch.nn.Module, positive: bool = False) -> dict[str, torch.Tensor]:
    """Random tensors under the module's own names and shapes."""
    make = torch.rand if positive else torch.randn
    return {k: make(v.shape) for k, v in module.state_dict().items()}


def timm_convnext_shapes(depths, dims, num_classes) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a timm ConvNeXt (``stem``, ``stages.S.blocks.J``, ``head``)."""
    shapes: dict[str, tuple[int, ...]] = {
        "stem.0.weight": (dims[0], 3, 4, 4),
        "stem.0.bias": (dims[0],),
        "stem.1.weight": (dims[0],),
        "stem.1.bias": (dims[0],),
    }
    for s, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
        if s > 0:
            shapes[f"stages.{s}.downsample.0.weight"] = (dims[s - 1],)
            shapes[f"stages.{s}.downsample.0.bias"] = (dims[s - 1],)
            shapes[f"stages.{s}.downsample.1.weight"] = (dim, dims[s - 1], 2, 2)
            shapes[f"stages.{s}.downsample.1.bias"] = (dim,)
        for j in range(depth):
            p = f"stages.{s}.blocks.{j}"
            shapes.update(
                {
                    f"{p}.gamma": (dim,),
                    f"{p}.conv_dw.weight": (dim, 1, 7, 7),
                    f"{p}.conv_dw.bias": (dim,),
                    f"{p}.norm.weight": (dim,),
                    f"{p}.norm.bias": (dim,),
                    f"{p}.mlp.fc1.weight": (4 * dim, dim),
                    f"{p}.mlp.fc1.bias": (4 * dim,),
                    f"{p}.mlp.fc2.weight": (dim, 4 * dim),
                    f"{p}.mlp.fc2.bias": (dim,),
                }
            )
    shapes.update(
        {
            "head.norm.weight": (dims[-1],),
            "head.norm.bias": (dims[-1],),
            "head.fc.weight": (num_classes, dims[-1]),
            "head.fc.bias": (num_classes,),
        }
    )
    return shapes


@pytest.fixture
def no_cached_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch hub dir, no Hugging Face cache hits, no lpips package copy."""
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(perceptual_module.hub, "cached_or_none", lambda *a, **k: None)
    monkeypatch.setattr(perceptual_module, "_package_copy", lambda *a, **k: None)
    return torch_home


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random weight files under the published files' names: torchvision VGG-16 (with its
    classifier), LPIPS linear layers, and a tiny ConvNeXt in torchvision names."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("weights")
    vgg = random_state_dict(VGG16Features())
    vgg["classifier.0.weight"] = torch.randn(4, 4)  # the published file has a classifier: dropped
    lin = random_state_dict(LPIPSHeads(), positive=True)
    convnext = random_state_dict(ConvNeXt(**TINY_CONVNEXT))
    paths = {"vgg": root / "vgg16-397923af.pth", "lin": root / "vgg.pth", "convnext": root / "convnext.pth"}
    for key, sd in (("vgg", vgg), ("lin", lin), ("convnext", convnext)):
        torch.save(sd, paths[key])
    return paths


# --- hinge and LeCam -------------------------------------------------------------------------


def test_hinge_losses_on_hand_made_logits() -> None:
    real = torch.tensor([2.0, 0.5])
    fake = torch.tensor([-2.0, 0.0])
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; fake: relu(1-2)=0, relu(1+0)=1 -> 0.5
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.375)
    assert hinge_g_loss(fake).item() == pytest.approx(1.0)
    # a perfect discriminator (margins met) has zero loss
    assert hinge_d_loss(torch.tensor([1.5, 3.0]), torch.tensor([-1.0, -4.0])).item() == 0.0


def test_lecam_formula_and_running_means() -> None:
    t = torch.tensor
    # relu(0.5 - (-0.4))^2 + relu(0.1 - (-0.2))^2 = 0.81 + 0.09
    assert lecam_loss(t(0.5), t(-0.2), t(0.1), t(-0.4)).item() == pytest.approx(0.9)
    # both terms clipped when real logits are below the fake EMA and fake above the real EMA
    assert lecam_loss(t(-1.0), t(1.0), t(0.0), t(0.0)).item() == 0.0

    ema = LeCamEMA(decay=0.9)
    real, fake = torch.ones(2, 1, 4, 4), -torch.ones(2, 1, 4, 4)
    assert ema(real, fake).item() == pytest.approx(2.0)  # against EMAs at 0
    assert ema.ema_real_logits_mean.item() == pytest.approx(0.1)
    assert ema.ema_fake_logits_mean.item() == pytest.approx(-0.1)
    assert ema(real, fake).item() == pytest.approx(2 * 1.1**2)
    assert set(ema.state_dict()) == {"ema_real_logits_mean", "ema_fake_logits_mean"}


# --- discriminator ---------------------------------------------------------------------------


@torch.no_grad()
def test_discriminator_output_shapes() -> None:
    torch.manual_seed(0)
    published = NLayerDiscriminator()
    assert published(torch.rand(1, 3, 256, 256)).shape == (1, 1, 16, 16)
    assert published(torch.rand(2, 3, 64, 64)).shape == (2, 1, 16, 16)
    small = build_discriminator(LossConfig.small())
    for size in (32, 64, 45):
        assert small(torch.rand(2, 3, size, size)).shape == (2, 1, 8, 8)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in published.parameters()) / 20


def test_discriminator_parameter_names_follow_training_code() -> None:
    shapes = {k: tuple(v.shape) for k, v in NLayerDiscriminator().state_dict().items()}
    assert shapes["block_in.0.weight"] == (128, 3, 5, 5)
    assert shapes["blocks.0.0.weight"] == (128, 128, 3, 3)
    assert shapes["blocks.1.0.weight"] == (256, 128, 3, 3)
    assert shapes["blocks.2.0.weight"] == (512, 256, 3, 3)
    assert shapes["blocks.2.1.kernel"] == (1, 1, 4, 4)
    assert shapes["blocks.2.2.weight"] == (512,)  # GroupNorm
    assert shapes["to_logits.0.weight"] == (512, 512, 1, 1)
    assert shapes["to_logits.2.weight"] == (1, 512, 5, 5)
    assert len(shapes) == 2 + 3 * 5 + 4


# --- backbones -------------------------------------------------------------------------------


def test_backbones_match_published_layouts() -> None:
    with torch.device("meta"):
        convnext, vgg = convnext_small(), VGG16Features()
    assert sum(p.numel() for p in convnext.parameters()) == 50_223_688  # torchvision convnext_small
    assert sum(p.numel() for p in vgg.parameters()) == 14_714_688  # torchvision vgg16 .features
    conv_idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert sorted(vgg.state_dict()) == sorted(
        f"features.{i}.{p}" for i in conv_idx for p in ("weight", "bias")
    )
    sd = convnext.state_dict()
    assert sd["features.5.26.layer_scale"].shape == (384, 1, 1)
    assert sd["features.6.1.weight"].shape == (768, 384, 2, 2)
    assert sd["classifier.2.weight"].shape == (1000, 768)
    # timm's names map one to one onto ours
    timm = {
        k: torch.empty(s, device="meta")
        for k, s in timm_convnext_shapes((3, 3, 27, 3), (96, 192, 384, 768), 1000).items()
    }
    mapped = {k: tuple(v.shape) for k, v in convnext_state_dict(timm).items()}
    assert mismatch_report({k: tuple(v.shape) for k, v in sd.items()}, mapped) is None


def test_timm_convnext_weights_load_strictly() -> None:
    timm = {k: torch.randn(s) for k, s in timm_convnext_shapes(**TINY_CONVNEXT).items()}
    model = ConvNeXt(**TINY_CONVNEXT)
    load_convnext(model, timm, "timm.safetensors")
    assert torch.equal(model.features[3][0].layer_scale, timm["stages.1.blocks.0.gamma"][:, None, None])
    assert torch.equal(model.classifier[2].weight, timm["head.fc.weight"])
    del timm["head.fc.bias"]
    with pytest.raises(CheckpointError, match="classifier.2.bias"):
        load_convnext(ConvNeXt(**TINY_CONVNEXT), timm, "timm.safetensors")


# --- perceptual loss -------------------------------------------------------------------------


def make_perceptual(weight_files: dict[str, Path], spec: str = "lpips-convnext_s-1.0-0.1") -> PerceptualLoss:
    return PerceptualLoss(
        spec,
        lpips_vgg_weights=weight_files["vgg"],
        lpips_linear_weights=weight_files["lin"],
        convnext_weights=weight_files["convnext"],
        download=False,
        convnext_model=ConvNeXt(**TINY_CONVNEXT),
    )


def test_perceptual_loss_loads_files_strictly_and_measures(weight_files: dict[str, Path]) -> None:
    loss = make_perceptual(weight_files)
    vgg = torch.load(weight_files["vgg"], weights_only=True)
    assert torch.equal(loss.lpips.net.features[28].weight, vgg["features.28.weight"])
    lin = torch.load(weight_files["lin"], weights_only=True)
    assert torch.equal(loss.lpips.heads.lin3.model[1].weight, lin["lin3.model.1.weight"])
    assert not any(p.requires_grad for p in loss.parameters())

    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    same, parts = loss(x, x.clone())
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    assert set(parts) == {"lpips", "convnext"}

    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    value, parts = loss(y, x)
    assert value.item() > 0
    expected = (parts["lpips"] + 0.1 * parts["convnext"]) / 1.1
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    value.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    loss.train()
    assert not loss.training


def test_perceptual_loss_rejects_mismatched_file(weight_files: dict[str, Path], tmp_path: Path) -> None:
    sd = torch.load(weight_files["lin"], weights_only=True)
    sd["lin5.model.1.weight"] = torch.rand(1, 8, 1, 1)
    bad = tmp_path / "bad_lin.pth"
    torch.save(sd, bad)
    with pytest.raises(CheckpointError, match="lin5.model.1.weight"):
        PerceptualLoss(
            "lpips", lpips_vgg_weights=weight_files["vgg"], lpips_linear_weights=bad, download=False
        )


def test_missing_weights_allowed_warn_once_and_contribute_zero(
    no_cached_weights: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="titok.losses.perceptual"):
        loss = PerceptualLoss("convnext_s", allow_missing=True, download=False)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert message.startswith("perceptual loss disabled: no weights for ConvNeXt-S")
    assert str(no_cached_weights / "hub" / "checkpoints" / "convnext_small-0c510722.pth") in message
    assert not loss.active
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    value, parts = loss(x, torch.rand(1, 3, 16, 16))
    assert value.item() == 0.0 and parts == {}


def test_missing_weights_without_permission_raise(no_cached_weights: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        PerceptualLoss("lpips", download=False)
    message = str(info.value)
    assert "vgg16-397923af.pth" in message and "download.pytorch.org" in message
    assert "PerceptualSimilarity" in message and "lpips_linear_weights" in message
    # an explicit path that does not exist is never silently skipped
    with pytest.raises(CheckpointError, match="nowhere.pth"):
        PerceptualLoss("convnext_s", convnext_weights=no_cached_weights / "nowhere.pth", allow_missing=True)


def test_weights_found_in_torch_hub_checkpoints(
    no_cached_weights: Path, weight_files: dict[str, Path]
) -> None:
    assert (
        CONVNEXT_S_WEIGHTS.default_path
        == no_cached_weights / "hub" / "checkpoints" / CONVNEXT_S_WEIGHTS.filename
    )
    CONVNEXT_S_WEIGHTS.default_path.parent.mkdir(parents=True)
    CONVNEXT_S_WEIGHTS.default_path.write_bytes(weight_files["convnext"].read_bytes())
    loss = PerceptualLoss("convnext_s", download=False, convnext_model=ConvNeXt(**TINY_CONVNEXT))
    assert loss.active and loss.convnext is not None


# --- combined stage-2 loss -------------------------------------------------------------------


class CountingDiscriminator(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def small_setup(weight_files: dict[str, Path], **overrides) -> tuple[Stage2Loss, CountingDiscriminator]:
    settings = dict(
        perceptual_loss="lpips",
        perceptual_weight=1.0,
        lpips_vgg_weights=str(weight_files["vgg"]),
        lpips_linear_weights=str(weight_files["lin"]),
        download_weights=False,
        discriminator_start=10,
        quantizer_weight=0.5,
    )
    config = LossConfig.small(**{**settings, **overrides})
    torch.manual_seed(0)
    return Stage2Loss(config), CountingDiscriminator(build_discriminator(config))


def test_generator_loss_backprops_and_gan_waits_for_start(weight_files: dict[str, Path]) -> None:
    loss, disc = small_setup(weight_files)
    x = torch.rand(2, 3, 32, 32)
    rec = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    q = torch.tensor(0.3, requires_grad=True)

    total, logs = loss.generator_loss(x, rec, q, global_step=9, discriminator=disc)
    assert disc.calls == 0 and logs["gan"].item() == 0.0 and logs["discriminator_factor"].item() == 0.0
    assert logs["reconstruction"].item() == pytest.approx(torch.mean((rec - x) ** 2).item(), rel=1e-5)
    assert logs["quantizer"].item() == pytest.approx(0.15)
    assert logs["perceptual"].item() > 0 and "perceptual_lpips" in logs
    parts = logs["reconstruction"] + logs["perceptual"] + logs["quantizer"] + logs["gan"]
    assert total.item() == pytest.approx(parts.item(), rel=1e-6)
    total.backward()
    assert rec.grad is not None and rec.grad.abs().sum() > 0
    assert q.grad.item() == pytest.approx(0.5)

    rec.grad = None
    total, logs = loss.generator_loss(x, rec, q, global_step=10, discriminator=disc)
    assert disc.calls == 1
    assert logs["gan"].item() == pytest.approx(0.01 * logs["gan_raw"].item(), rel=1e-6)
    assert logs["gan"].item() != 0.0
    total.backward()
    assert all(p.grad is None for p in disc.parameters())  # the generator step never trains D
    assert all(p.requires_grad for p in disc.parameters())  # and leaves D trainable
    with pytest.raises(ValueError, match="no discriminator"):
        loss.generator_loss(x, rec, q, global_step=10)


def test_discriminator_step_hinge_lecam_and_logs(weight_files: dict[str, Path]) -> None:
    loss, disc = small_setup(weight_files)
    x = torch.rand(2, 3, 32, 32)
    rec = torch.rand(2, 3, 32, 32, requires_grad=True)
    total, logs = loss.discriminator_loss(x, rec, global_step=10, discriminator=disc)
    with torch.no_grad():
        real, fake = disc.inner(x), disc.inner(rec)
    assert logs["logits_real"].item() == pytest.approx(real.mean().item(), rel=1e-5)
    assert logs["logits_fake"].item() == pytest.approx(fake.mean().item(), rel=1e-5)
    assert logs["hinge"].item() == pytest.approx(hinge_d_loss(real, fake).item(), rel=1e-5)
    expected_lecam = 0.001 * lecam_loss(real.mean(), fake.mean(), torch.zeros(1), torch.zeros(1))
    assert logs["lecam"].item() == pytest.approx(expected_lecam.item(), rel=1e-5)
    assert total.item() == pytest.approx((logs["hinge"] + logs["lecam"]).item(), rel=1e-6)
    assert loss.lecam.ema_real_logits_mean.item() == pytest.approx(0.001 * real.mean().item(), rel=1e-4)
    total.backward()
    assert all(p.grad is not None for p in disc.parameters())
    assert rec.grad is None

    _, logs = loss.discriminator_loss(x, rec, global_step=0, discriminator=disc)
    assert logs["hinge"].item() == 0.0  # factor 0 before discriminator_start
    assert loss.discriminator_active(10) and not loss.discriminator_active(9)


def test_losses_under_bf16_autocast_match_float32(weight_files: dict[str, Path]) -> None:
    loss, disc = small_setup(weight_files, discriminator_start=0)
    x = torch.rand(2, 3, 32, 32)
    rec32 = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    ref, _ = loss.generator_loss(x, rec32, 0.1, global_step=5, discriminator=disc)

    rec = rec32.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = loss.generator_loss(x.to(torch.bfloat16), rec, 0.1, global_step=5, discriminator=disc)
        d_total, d_logs = loss.discriminator_loss(x, rec, global_step=5, discriminator=disc)
    assert total.dtype == torch.float32 and d_total.dtype == torch.float32
    assert torch.isfinite(total) and torch.isfinite(d_total)
    assert total.item() == pytest.approx(ref.item(), rel=0.05)
    total.backward()
    d_total.backward()
    assert rec.grad is not None and rec.grad.dtype == torch.bfloat16 and rec.grad.abs().sum() > 0


# --- configuration ---------------------------------------------------------------------------


def test_config_defaults_are_the_titok_stage2_recipe() -> None:
    c = LossConfig()
    assert (c.reconstruction_loss, c.reconstruction_weight) == ("l2", 1.0)
    assert (c.perceptual_loss, c.perceptual_weight) == ("convnext_s", 0.1)
    assert (c.quantizer_weight, c.discriminator_start) == (0.0, 20_000)
    assert (c.discriminator_factor, c.discriminator_weight) == (1.0, 0.01)
    assert (c.lecam_regularization_weight, c.lecam_ema_decay) == (0.001, 0.999)
    assert (c.discriminator_hidden_channels, c.discriminator_num_stages, c.discriminator_pool_size) == (
        128,
        3,
        16,
    )


def test_config_validation() -> None:
    authors = {
        "discriminator_start": 200_000,
        "quantizer_weight": 1.0,
        "discriminator_factor": 1.0,
        "discriminator_weight": 0.1,
        "perceptual_loss": "lpips-convnext_s-1.0-0.1",
        "perceptual_weight": 1.1,
        "reconstruction_loss": "l2",
        "reconstruction_weight": 1.0,
        "lecam_regularization_weight": 0.001,
    }
    assert LossConfig.from_dict(authors).perceptual_weight == 1.1
    with pytest.raises(ConfigError, match="perceptual_losss"):
        LossConfig.from_dict({"perceptual_losss": "lpips"})
    with pytest.raises(ConfigError, match="perceptual_loss"):
        LossConfig(perceptual_loss="lpips-convnext_s-x-0.1")
    with pytest.raises(ConfigError, match="reconstruction_loss"):
        LossConfig(reconstruction_loss="l3")
    with pytest.raises(ConfigError, match="norm_groups"):
        LossConfig(discriminator_hidden_channels=48)
