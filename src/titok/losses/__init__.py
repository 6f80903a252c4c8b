"""Training losses of the stage-2 (pixel) tokenizer: reconstruction, perceptual, GAN, LeCam."""

from titok.losses.adversarial import LeCamEMA, frozen_parameters, hinge_d_loss, hinge_g_loss, lecam_loss
from titok.losses.backbones import ConvNeXt, VGG16Features, convnext_small
from titok.losses.discriminator import NLayerDiscriminator
from titok.losses.perceptual import LPIPS, PerceptualLoss, find_weights, parse_perceptual_spec
from titok.losses.reconstruction import LossConfig, Stage2Loss, build_discriminator

__all__ = [
    "LPIPS",
    "ConvNeXt",
    "LeCamEMA",
    "LossConfig",
    "NLayerDiscriminator",
    "PerceptualLoss",
    "Stage2Loss",
    "VGG16Features",
    "build_discriminator",
    "convnext_small",
    "find_weights",
    "frozen_parameters",
    "hinge_d_loss",
    "hinge_g_loss",
    "lecam_loss",
    "parse_perceptual_spec",
]
