"""A small ResNet-style image classifier, usable as the feature network of FID and IS.

Images (B, 3, H, W) in [0, 1] are resized to ``image_size`` when needed, normalised with the
config's per-channel mean and std, and run through a convolutional stem, one stage per entry of
``widths`` (each stage after the first halves the resolution) of ``blocks_per_stage`` basic
residual blocks (two 3x3 conv + BatchNorm, ReLU, projection shortcut when the shape changes), a
global average pool and a linear head.

As a :class:`titok.metrics.FeatureNetwork` its forward returns ``(features [B, widths[-1]],
logits [B, num_classes])``, the features being the pooled penultimate activations, and its
``name`` (e.g. ``"imagenette64-resnet"``) labels every metric computed with it.

Saved as ``config.json`` (kind ``"classifier"``) + ``model.safetensors`` with
:meth:`Classifier.save_pretrained`, read back with :func:`load_classifier`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from titok.errors import CheckpointError, ConfigError
from titok.loading.weights import load_strict, read_state_dict

#: ImageNet per-channel statistics, the default input normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ClassifierConfig:
    """Architecture of :class:`Classifier`.

    Attributes:
        name: feature-network name that labels metrics (``"FID[<name>]"``).
        num_classes: number of output classes.
        image_size: input side the network works at; other sizes are resized (bilinear).
        widths: channels of each stage; the features have ``widths[-1]`` dimensions.
        blocks_per_stage: residual blocks per stage.
        stem_stride: stride of the stem convolution (2 halves the cost at 64 px).
        mean, std: per-channel input normalisation.
    """

    name: str = "resnet"
    num_classes: int = 10
    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks_per_stage: int = 1
    stem_stride: int = 2
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.mean = tuple(float(m) for m in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(s) for s in self.std)  # type: ignore[assignment]
        if not self.name or any(c in self.name for c in "[]/\\"):
            raise ConfigError(f"classifier name must be non-empty without [ ] / \\, got {self.name!r}")
        if self.num_classes < 2 or self.image_size < 8 or not self.widths or min(self.widths) < 1:
            raise ConfigError(
                "classifier: need num_classes >= 2, image_size >= 8 and positive widths, got "
                f"{self.num_classes}, {self.image_size}, {list(self.widths)}"
            )
        if self.blocks_per_stage < 1 or self.stem_stride not in (1, 2):
            raise ConfigError(
                f"classifier: need blocks_per_stage >= 1 and stem_stride 1 or 2, got "
                f"{self.blocks_per_stage} and {self.stem_stride}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"classifier: mean/std need 3 values, std > 0; got {self.mean}, {self.std}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"classifier config: unknown keys {unknown} (known: {sorted(known)})")
        return cls(**data)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (1x1 conv-BN projection when needed).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first conv (2 halves the resolution).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Classifier(nn.Module):
    """Small ResNet classifier and feature network (see the module docstring).

    Args:
        config: the architecture.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.name: str = config.name
        first = config.widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, first, 3, stride=config.stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(first),
            nn.ReLU(inplace=True),
        )
        stages = []
        in_channels = first
        for index, width in enumerate(config.widths):
            blocks = [
                BasicBlock(in_channels if b == 0 else width, width, stride=2 if index > 0 and b == 0 else 1)
                for b in range(config.blocks_per_stage)
            ]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(in_channels, config.num_classes)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # residual branches start as identity
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    @property
    def feature_dim(self) -> int:
        return self.config.widths[-1]

    def _normalised(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {list(images.shape)}")
        x = images.to(self.head.weight.dtype)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> pooled penultimate activations [B, widths[-1]]."""
        return self.stages(self.stem(self._normalised(images))).mean(dim=(2, 3))

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] -> the stem's and each stage's activations, fine to
        coarse: [(B, widths[0], H/s, W/s), (B, widths[0], ...), (B, widths[1], ...), ...] (the
        taps of a perceptual distance, :mod:`titok.losses.classifier_distance`)."""
        x = self.stem(self._normalised(images))
        maps = [x]
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] -> (features [B, D], logits [B, num_classes])."""
        features = self.features(images)
        return features, self.head(features)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` (kind ``"classifier"``) and ``model.safetensors``; returns the folder."""
        from titok.loading.weights import save_model

        return save_model(self, directory, kind="classifier", config=self.config.to_dict())

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], device: torch.device | str = "cpu"
    ) -> Classifier:
        """See :func:`load_classifier`."""
        return load_classifier(directory, device=device)


def is_classifier_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder whose ``config.json`` says it holds a classifier."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("kind") == "classifier"
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def load_classifier(directory: str | os.PathLike[str], device: torch.device | str = "cpu") -> Classifier:
    """Load a classifier saved by :meth:`Classifier.save_pretrained`: strict, eval mode, no gradients.

    Raises:
        CheckpointError: missing folder or files, a config of another kind, or weights that do
            not match the config.
    """
    folder = Path(directory)
    config_path, weights = folder / "config.json", folder / "model.safetensors"
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such classifier folder")
    for needed in (config_path, weights):
        if not needed.is_file():
            raise CheckpointError(f"{folder}: not a classifier folder (missing {needed.name})")
    try:
        meta = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: cannot read JSON config ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("kind") != "classifier":
        kind = meta.get("kind") if isinstance(meta, dict) else None
        raise CheckpointError(f"{config_path}: holds a {kind!r}, not a classifier")
    try:
        config = ClassifierConfig.from_dict(meta.get("config", {}))
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc
    model = Classifier(config)
    load_strict(model, read_state_dict(weights), str(weights))
    return model.to(device).eval().requires_grad_(False)


__all__ = ["BasicBlock", "Classifier", "ClassifierConfig", "is_classifier_folder", "load_classifier"]
