"""Frozen ImageNet backbones behind the perceptual losses, in plain torch.

* :class:`VGG16Features` holds the 13 convolutions of VGG-16 under the names of torchvision's
  ``vgg16-397923af.pth`` (``features.N.weight``), so that file loads strictly once its
  ``classifier.*`` tensors are dropped.
* :class:`ConvNeXt` (``convnext_small()``) uses torchvision's ConvNeXt names
  (``convnext_small-0c510722.pth``: ``features.*``, ``classifier.*``); timm's names
  (``stem.*``, ``stages.*``, ``head.*``) are mapped name by name.

Both are inference-only: no dropout, no stochastic depth.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from titok.loading.weights import load_strict

#: Channels and layer layout of VGG-16: ints are 3x3 convolutions, "M" a 2x2 max-pool.
_VGG16_LAYOUT: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
)

#: Indices in ``features`` whose outputs LPIPS compares (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
VGG16_TAPS: tuple[int, ...] = (3, 8, 15, 22, 29)

#: Channels of the five LPIPS taps.
VGG16_TAP_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)


class VGG16Features(nn.Module):
    """The convolutional part of VGG-16, returning the five ReLU outputs LPIPS uses.

    ``features`` has the torchvision layout up to ``relu5_3`` (indices 0-29).
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU()]
                in_ch = int(item)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) normalised images -> five feature maps at strides 1, 2, 4, 8, 16."""
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG16_TAPS:
                taps.append(x)
        return taps


def vgg16_features_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the ``features.*`` tensors of a torchvision VGG-16 file (its classifier is not used).

    LPIPS-style names ``net.sliceK.N.*`` are accepted too and renamed to ``features.N.*``.
    Any other name is kept, so a strict load reports it.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if name.startswith("classifier."):
            continue
        match = re.fullmatch(r"net\.slice\d\.(\d+)\.(weight|bias)", name)
        out[f"features.{match[1]}.{match[2]}" if match else name] = tensor
    return out


def load_vgg16_features(model: VGG16Features, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strictly load a torchvision VGG-16 (or LPIPS ``net.*``) state dict into ``model``."""
    load_strict(model, vgg16_features_state_dict(state_dict), source)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class _Permute(nn.Module):
    """Reorders dimensions (no parameters); keeps block indices aligned with torchvision."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, 4x MLP, layer scale, residual. (B, C, H, W) -> same."""

    def __init__(self, dim: int, layer_scale: float = 1e-6) -> None:
        """
        Args:
            dim: channels.
            layer_scale: initial value of the per-channel residual scale.
        """
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim),
            _Permute((0, 2, 3, 1)),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            _Permute((0, 3, 1, 2)),
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * self.block(x)


class ConvNeXt(nn.Module):
    """ConvNeXt image classifier with torchvision's parameter names.

    ``features`` alternates stem/downsampling layers (even indices) and block stages (odd
    indices); ``classifier`` is LayerNorm2d, flatten, linear.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 27, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        num_classes: int = 1000,
    ) -> None:
        """
        Args:
            depths: blocks per stage (ConvNeXt-S: 3, 3, 27, 3).
            dims: channels per stage (ConvNeXt-S: 96, 192, 384, 768).
            num_classes: classifier outputs.
        """
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"depths ({len(depths)}) and dims ({len(dims)}) differ in length")
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        ]
        for i, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
            if i > 0:
                layers.append(
                    nn.Sequential(
                        LayerNorm2d(dims[i - 1], eps=1e-6),
                        nn.Conv2d(dims[i - 1], dim, kernel_size=2, stride=2),
                    )
                )
            layers.append(nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth))))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1), nn.Linear(dims[-1], num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) ImageNet-normalised images -> (B, num_classes) logits."""
        return self.classifier(self.avgpool(self.features(x)))


def convnext_small(num_classes: int = 1000) -> ConvNeXt:
    """ConvNeXt-S (50.2M parameters with 1000 classes)."""
    return ConvNeXt((3, 3, 27, 3), (96, 192, 384, 768), num_classes)


def _timm_to_torchvision_name(name: str) -> str:
    """One timm ConvNeXt name -> the torchvision name (unknown names are returned unchanged)."""
    if m := re.fullmatch(r"stem\.([01])\.(weight|bias)", name):
        return f"features.0.{m[1]}.{m[2]}"
    if m := re.fullmatch(r"stages\.(\d+)\.downsample\.([01])\.(weight|bias)", name):
        return f"features.{2 * int(m[1])}.{m[2]}.{m[3]}"
    if m := re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", name):
        prefix = f"features.{2 * int(m[1]) + 1}.{m[2]}"
        inner = {
            "gamma": "layer_scale",
            "conv_dw.weight": "block.0.weight",
            "conv_dw.bias": "block.0.bias",
            "norm.weight": "block.2.weight",
            "norm.bias": "block.2.bias",
            "mlp.fc1.weight": "block.3.weight",
            "mlp.fc1.bias": "block.3.bias",
            "mlp.fc2.weight": "block.5.weight",
            "mlp.fc2.bias": "block.5.bias",
        }.get(m[3])
        return f"{prefix}.{inner}" if inner else name
    return {
        "head.norm.weight": "classifier.0.weight",
        "head.norm.bias": "classifier.0.bias",
        "head.fc.weight": "classifier.2.weight",
        "head.fc.bias": "classifier.2.bias",
    }.get(name, name)


def convnext_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ConvNeXt state dict in torchvision names, from torchvision or timm names.

    timm's per-channel ``gamma`` (C,) becomes torchvision's ``layer_scale`` (C, 1, 1).
    """
    if "stem.0.weight" not in state_dict:
        return dict(state_dict)
    out = {}
    for name, tensor in state_dict.items():
        new = _timm_to_torchvision_name(name)
        out[new] = tensor[:, None, None] if name.endswith(".gamma") and tensor.dim() == 1 else tensor
    return out


def load_convnext(model: ConvNeXt, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strictly load a torchvision- or timm-named ConvNeXt state dict into ``model``."""
    load_strict(model, convnext_state_dict(state_dict), source)
