"""Perceptual losses with frozen pretrained backbones: LPIPS (VGG-16) and ConvNeXt-S logits.

The loss is named as in the TiTok training configs:

* ``"lpips"``: LPIPS distance;
* ``"convnext_s"``: MSE between ConvNeXt-S ImageNet logits of both images, resized to 224 px;
* ``"lpips-convnext_s-A-B"``: ``(A * lpips + B * convnext) / (A + B)``;
* ``"classifier"``: LPIPS-style distance on the feature maps of a classifier trained with
  ``titok train classifier`` (``classifier_network``: its folder), the offline choice
  (:mod:`titok.losses.classifier_distance`);
* ``"none"``: no perceptual loss.

Weights are read from an explicit path, else from ``<torch hub dir>/checkpoints/`` (where
torchvision caches them), the installed ``lpips`` package or the Hugging Face cache, else
downloaded when allowed. Missing weights raise :class:`CheckpointError` saying what to
download and where to put it; with ``allow_missing=True`` the backbone is dropped with one
warning and its term is 0 (the weighted average keeps its configured denominator).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from titok.errors import CheckpointError, ConfigError
from titok.loading import hub
from titok.loading.weights import load_strict, read_state_dict
from titok.losses.backbones import (
    VGG16_TAP_CHANNELS,
    ConvNeXt,
    VGG16Features,
    convnext_small,
    load_convnext,
    load_vgg16_features,
)
from titok.losses.classifier_distance import NEEDS_NETWORK, ClassifierFeatureDistance, unit_channels
from titok.models.classifier import load_classifier

log = logging.getLogger(__name__)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# LPIPS input normalisation, applied to images in [-1, 1].
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


@dataclass(frozen=True)
class WeightsFile:
    """A pretrained weights file a perceptual backbone needs, and where it may be found.

    Attributes:
        what: human-readable description.
        filename: its name under ``<torch hub dir>/checkpoints/``.
        url: where to download it.
        option: the configuration field that takes its local path.
        package_file: (package, relative path) of a copy shipped inside a Python package.
        hub_repo, hub_filename: an equivalent file in the Hugging Face cache.
    """

    what: str
    filename: str
    url: str
    option: str
    package_file: tuple[str, str] | None = None
    hub_repo: str | None = None
    hub_filename: str | None = None

    @property
    def default_path(self) -> Path:
        """``<torch hub dir>/checkpoints/<filename>`` (``$TORCH_HOME/hub/checkpoints``)."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def missing_message(self) -> str:
        """What is missing, what to download and where to put it."""
        also = (
            f"; `hf download {self.hub_repo} {self.hub_filename}` is accepted too"
            if self.hub_repo and self.hub_filename
            else ""
        )
        return (
            f"no weights for {self.what}: download {self.url} and put it at {self.default_path} "
            f"(or pass its path as `{self.option}`{also})"
        )


VGG16_WEIGHTS = WeightsFile(
    what="VGG-16 ImageNet features for LPIPS (torchvision)",
    filename="vgg16-397923af.pth",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    option="lpips_vgg_weights",
)
LPIPS_LINEAR_WEIGHTS = WeightsFile(
    what="LPIPS v0.1 linear layers for VGG",
    filename="lpips_v0.1_vgg.pth",
    url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
    option="lpips_linear_weights",
    package_file=("lpips", "weights/v0.1/vgg.pth"),
)
CONVNEXT_S_WEIGHTS = WeightsFile(
    what="ConvNeXt-S ImageNet-1k classifier (torchvision IMAGENET1K_V1)",
    filename="convnext_small-0c510722.pth",
    url="https://download.pytorch.org/models/convnext_small-0c510722.pth",
    option="convnext_weights",
    hub_repo="timm/convnext_small.fb_in1k",
    hub_filename="model.safetensors",
)


def _package_copy(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    return None


def find_weights(
    weights: WeightsFile, path: str | os.PathLike[str] | None = None, download: bool = True
) -> Path | None:
    """Locate ``weights``: the explicit ``path``, the torch hub checkpoints folder, a package
    copy, the Hugging Face cache, then (if ``download``) a fresh download; None if all fail.

    An explicit ``path`` that does not exist is an error, never a silent fallback.
    """
    if path is not None:
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: no such weights file ({weights.what}, option `{weights.option}`)")
        return Path(path)
    if weights.default_path.is_file():
        return weights.default_path
    if weights.package_file and (found := _package_copy(*weights.package_file)):
        return found
    if weights.hub_repo and weights.hub_filename:
        found = hub.cached_or_none(weights.hub_repo, weights.hub_filename)
        if found is not None:
            return found
    if download:
        try:
            weights.default_path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(weights.default_path), progress=False)
            return weights.default_path
        except Exception as exc:  # noqa: BLE001 - any network failure means "not available"
            log.debug("download of %s failed: %s", weights.url, exc)
    return None


class LPIPSHeads(nn.Module):
    """The five learned 1x1 channel weightings of LPIPS (``linK.model.1.weight``, (1, C, 1, 1))."""

    def __init__(self, channels: tuple[int, ...] = VGG16_TAP_CHANNELS) -> None:
        super().__init__()
        for k, ch in enumerate(channels):
            head = nn.Module()
            head.model = nn.Sequential(nn.Dropout(), nn.Conv2d(ch, 1, kernel_size=1, bias=False))
            self.add_module(f"lin{k}", head)

    def layers(self) -> list[nn.Module]:
        return [getattr(self, f"lin{k}").model for k in range(len(VGG16_TAP_CHANNELS))]


class LPIPS(nn.Module):
    """Learned perceptual distance with a VGG-16 trunk: two (B, 3, H, W) images in [0, 1] -> (B,)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = VGG16Features()
        self.heads = LPIPSHeads()
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE)[None, :, None, None], persistent=False)

    def load_weights(self, vgg_path: Path, linear_path: Path) -> None:
        """Strictly load the torchvision VGG-16 file and the LPIPS linear-layer file."""
        load_vgg16_features(self.net, read_state_dict(vgg_path), str(vgg_path))
        load_strict(self.heads, read_state_dict(linear_path), str(linear_path))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.net(((x * 2.0 - 1.0) - self.shift) / self.scale)
        fy = self.net(((y * 2.0 - 1.0) - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for a, b, head in zip(fx, fy, self.heads.layers(), strict=True):
            diff = (unit_channels(a) - unit_channels(b)) ** 2
            total = total + head(diff).mean(dim=(1, 2, 3))
        return total


class ConvNeXtLogitDistance(nn.Module):
    """MSE between ConvNeXt ImageNet logits of two (B, 3, H, W) images in [0, 1] -> scalar.

    Images are resized to ``size`` (bilinear, antialiased) and ImageNet-normalised first.
    """

    def __init__(self, model: ConvNeXt | None = None, size: int = 224) -> None:
        """
        Args:
            model: the classifier (default: ConvNeXt-S).
            size: side the images are resized to.
        """
        super().__init__()
        self.model = model if model is not None else convnext_small()
        self.size = size
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD)[None, :, None, None], persistent=False)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return self.model((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self._logits(x), self._logits(y))


def is_classifier_spec(spec: str) -> bool:
    """Whether ``spec`` names the classifier-feature distance (``"classifier"``)."""
    return spec.strip().lower() == "classifier"


def uses_perceptual(spec: str) -> bool:
    """Whether ``spec`` names any perceptual distance (not ``"none"``)."""
    return parse_perceptual_spec(spec) != (None, None) or is_classifier_spec(spec)


def parse_perceptual_spec(spec: str) -> tuple[float | None, float | None]:
    """``spec`` -> (LPIPS weight, ConvNeXt weight); None where that backbone is unused
    (both None for ``"none"`` and ``"classifier"``)."""
    name = spec.strip().lower()
    if name in ("", "none", "classifier"):
        return None, None
    if name == "lpips":
        return 1.0, None
    if name == "convnext_s":
        return None, 1.0
    parts = name.split("-")
    if len(parts) == 4 and parts[:2] == ["lpips", "convnext_s"]:
        try:
            w_lpips, w_convnext = float(parts[2]), float(parts[3])
        except ValueError:
            pass
        else:
            if w_lpips >= 0 and w_convnext >= 0 and w_lpips + w_convnext > 0:
                return w_lpips, w_convnext
    raise ConfigError(
        f"perceptual_loss: expected 'none', 'lpips', 'convnext_s', 'classifier' or 'lpips-convnext_s-A-B' "
        f"(A, B >= 0 weights), got {spec!r}"
    )


class PerceptualLoss(nn.Module):
    """Weighted perceptual distance between images in [0, 1]; always frozen and in eval mode.

    ``forward(x, y)`` -> (scalar loss, {"lpips": ..., "convnext": ...} detached parts; a part is
    absent when its backbone is not configured or has no weights).
    """

    def __init__(
        self,
        spec: str = "convnext_s",
        *,
        lpips_vgg_weights: str | os.PathLike[str] | None = None,
        lpips_linear_weights: str | os.PathLike[str] | None = None,
        convnext_weights: str | os.PathLike[str] | None = None,
        allow_missing: bool = False,
        download: bool = True,
        convnext_model: ConvNeXt | None = None,
        classifier_network: str | os.PathLike[str] | None = None,
        classifier_taps: Sequence[int] | None = None,
    ) -> None:
        """
        Args:
            spec: which backbones and weights (see the module docstring).
            lpips_vgg_weights: torchvision ``vgg16-397923af.pth`` (or None: search/download).
            lpips_linear_weights: LPIPS v0.1 ``vgg.pth`` (or None: search/download).
            convnext_weights: ConvNeXt-S weights, torchvision or timm names (or None: search/download).
            allow_missing: drop a backbone without weights (one warning) instead of raising.
            download: try to download weights not found locally.
            convnext_model: the ConvNeXt to use (default ConvNeXt-S); another size needs matching weights.
            classifier_network: folder of the classifier of the ``"classifier"`` spec.
            classifier_taps: the feature maps of that classifier to compare (None: all).
        """
        super().__init__()
        self.spec = spec
        self.weight_lpips, self.weight_convnext = parse_perceptual_spec(spec)
        self.lpips: LPIPS | None = None
        self.convnext: ConvNeXtLogitDistance | None = None
        self.classifier: ClassifierFeatureDistance | None = None
        if is_classifier_spec(spec):
            if classifier_network is None:
                raise ConfigError(NEEDS_NETWORK)
            taps = None if classifier_taps is None else tuple(classifier_taps)
            try:
                self.classifier = ClassifierFeatureDistance(load_classifier(classifier_network), taps)
            except ValueError as exc:
                raise ConfigError(f"losses.perceptual_taps: {exc}") from None

        if self.weight_lpips is not None:
            vgg = find_weights(VGG16_WEIGHTS, lpips_vgg_weights, download)
            lin = find_weights(LPIPS_LINEAR_WEIGHTS, lpips_linear_weights, download)
            missing = [w for w, p in ((VGG16_WEIGHTS, vgg), (LPIPS_LINEAR_WEIGHTS, lin)) if p is None]
            if missing:
                self._missing("LPIPS", missing, allow_missing)
            else:
                self.lpips = LPIPS()
                self.lpips.load_weights(vgg, lin)  # type: ignore[arg-type]

        if self.weight_convnext is not None:
            path = find_weights(CONVNEXT_S_WEIGHTS, convnext_weights, download)
            if path is None:
                self._missing("ConvNeXt", [CONVNEXT_S_WEIGHTS], allow_missing)
            else:
                self.convnext = ConvNeXtLogitDistance(convnext_model)
                load_convnext(self.convnext.model, read_state_dict(path), str(path))

        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _missing(name: str, files: list[WeightsFile], allow_missing: bool) -> None:
        details = "; ".join(f.missing_message() for f in files)
        if not allow_missing:
            raise CheckpointError(f"{name} perceptual loss: {details}")
        log.warning("perceptual loss disabled: %s", details)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Stays in eval mode whatever is asked (frozen backbones, no dropout)."""
        return super().train(False)

    @property
    def active(self) -> bool:
        """Whether any backbone contributes."""
        return self.lpips is not None or self.convnext is not None or self.classifier is not None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Perceptual distance of (B, 3, H, W) images in [0, 1], averaged over the batch."""
        loss = x.new_zeros(())
        parts: dict[str, torch.Tensor] = {}
        if self.lpips is not None and self.weight_lpips is not None:
            value = self.lpips(x, y).mean()
            parts["lpips"] = value.detach()
            loss = loss + self.weight_lpips * value
        if self.convnext is not None and self.weight_convnext is not None:
            value = self.convnext(x, y)
            parts["convnext"] = value.detach()
            loss = loss + self.weight_convnext * value
        if self.classifier is not None:
            value = self.classifier(x, y).mean()
            parts["classifier"] = value.detach()
            return value, parts
        denominator = (self.weight_lpips or 0.0) + (self.weight_convnext or 0.0)
        return (loss / denominator if denominator > 0 else loss), parts
