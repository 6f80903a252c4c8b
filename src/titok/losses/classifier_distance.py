"""A perceptual distance that needs no download: the feature maps of a small trained classifier.

The authors' perceptual terms (LPIPS on VGG-16, ConvNeXt-S logits) are read off networks trained
on ImageNet, whose weights cannot be fetched offline. At the scale of the built-in models the
natural counterpart is a classifier trained on the run's own data (``titok train classifier``):
its stem and stage activations play the role of VGG's taps in LPIPS. The distance is LPIPS with
uniform channel weights (no learned linear layers)::

    d(x, y) = sum over taps l of mean over (h, w) of || u_l(x)[h, w] - u_l(y)[h, w] ||^2

where ``u_l`` is tap ``l``'s activation with each pixel's channel vector divided by its L2 norm,
so every tap contributes a value in [0, 4] whatever its scale.

Use a classifier other than the one that measures rFID: a loss read off the metric's own network
would improve the metric without improving the images (``docs/learning.md#decoder-fine-tuning``).
"""

from __future__ import annotations

import torch
from torch import nn

from titok.models.classifier import Classifier

#: What the "classifier" perceptual distance lacks without its network (LossConfig and PerceptualLoss).
NEEDS_NETWORK = (
    "perceptual_loss 'classifier' needs losses.perceptual_network: the folder of a classifier "
    "trained with `titok train classifier`"
)


def unit_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each pixel's channel vector by its L2 norm: (B, C, H, W) -> same (LPIPS's
    normalisation, used by both LPIPS here and :class:`ClassifierFeatureDistance`)."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class ClassifierFeatureDistance(nn.Module):
    """LPIPS-style distance on a frozen :class:`~titok.models.classifier.Classifier`'s feature maps.

    Args:
        classifier: the network (frozen here, kept in eval mode so BatchNorm uses running stats).
        taps: which of :meth:`Classifier.feature_maps` to compare (None: all of them).
    """

    def __init__(self, classifier: Classifier, taps: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.classifier = classifier
        count = len(classifier.config.widths) + 1
        self.taps = tuple(range(count)) if taps is None else tuple(taps)
        if not self.taps or min(self.taps) < 0 or max(self.taps) >= count:
            raise ValueError(f"taps must be in [0, {count}), got {list(self.taps)}")
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ClassifierFeatureDistance:
        """Stays in eval mode whatever is asked (frozen network, BatchNorm running statistics)."""
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> (B,) distance per image pair."""
        maps_x = self.classifier.feature_maps(x)
        maps_y = self.classifier.feature_maps(y)
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        for tap in self.taps:
            diff = unit_channels(maps_x[tap].float()) - unit_channels(maps_y[tap].float())
            total = total + diff.pow(2).sum(dim=1).mean(dim=(1, 2))
        return total
