"""The Inception-v3 network of FID and Inception Score, in plain torch.

This is the TensorFlow Inception graph of 2015-12-05 used by the reference FID/IS code, in the
PyTorch port whose weights are published as ``pt_inception-2015-12-05-6726825d.pth`` (and, same
tensors, ``weights-inception-2015-12-05-6726825d.pth``). Parameter names match those files, so
they load unchanged. It differs from the ImageNet Inception-v3 of torchvision in:

* 1008 output classes;
* average pools inside the A, C and first E blocks ignore padded zeros;
* the last E block (``Mixed_7c``) max-pools in its pool branch.

Output: the 2048-d average-pooled features (``pool3``, used for FID) and the 1008 logits (used
for IS). As in the original IS code, the logits leave the classifier bias out (``pool3 @ W^T``)
unless ``logits_bias=True``.

Two input conventions are offered for images (B, 3, H, W) in [0, 1]; they give slightly
different features, so each has its own network name and their statistics are never compared:

* ``"pytorch-fid"`` (name ``inception-v3-2015-12-05``): bilinear resize to 299 x 299 with
  ``F.interpolate`` (``align_corners=False``, no antialiasing), then scaling to [-1, 1].
* ``"tensorflow"`` (name ``inception-v3-2015-12-05-tf``): the convention of the TensorFlow
  evaluators and of torch-fidelity, used by the TiTok authors' reconstruction evaluator: pixels
  truncated to 8 bits (``floor(255 x)``), TensorFlow-1 bilinear resize (source coordinate
  ``dst * in / out``, no half-pixel offset, edge clamped), then ``(v - 128) / 128``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from titok.errors import CheckpointError
from titok.loading.weights import load_strict, read_state_dict

FID_INCEPTION_NAME = "inception-v3-2015-12-05"
#: Name of the same network with the TensorFlow input convention.
FID_INCEPTION_TF_NAME = "inception-v3-2015-12-05-tf"
Preprocessing = Literal["pytorch-fid", "tensorflow"]
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
#: The same weights as distributed under another name; used when found in the cache.
FID_WEIGHTS_ALTERNATIVE_FILENAMES = ("weights-inception-2015-12-05-6726825d.pth",)
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008
BN_EPS = 1e-3


class ConvBNReLU(nn.Module):
    """Bias-free convolution, batch norm (eps 1e-3), ReLU. Parameters ``conv.*`` and ``bn.*``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TensorFlow, averages only over non-padded pixels."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pool branches -> 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBNReLU(in_channels, 64, 1)
        self.branch5x5_1 = ConvBNReLU(in_channels, 48, 1)
        self.branch5x5_2 = ConvBNReLU(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBNReLU(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBNReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBNReLU(96, 96, 3, padding=1)
        self.branch_pool = ConvBNReLU(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg_pool_same(x)),
            ],
            dim=1,
        )


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: strided 3x3, strided double 3x3 and max-pool branches."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBNReLU(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBNReLU(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBNReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBNReLU(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions -> 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBNReLU(in_channels, 192, 1)
        self.branch7x7_1 = ConvBNReLU(in_channels, c7, 1)
        self.branch7x7_2 = ConvBNReLU(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBNReLU(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBNReLU(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBNReLU(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBNReLU(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBNReLU(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBNReLU(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBNReLU(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7dbl = layer(b7dbl)
        return torch.cat([self.branch1x1(x), b7, b7dbl, self.branch_pool(_avg_pool_same(x))], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: strided 3x3, 7x7-then-strided-3x3 and max-pool branches."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBNReLU(in_channels, 192, 1)
        self.branch3x3_2 = ConvBNReLU(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBNReLU(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBNReLU(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBNReLU(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBNReLU(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1
        )


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches -> 2048 channels.

    Args:
        in_channels: input channels.
        pool: pooling of the pool branch; the FID network uses ``"avg"`` (padding excluded) in
            ``Mixed_7b`` and ``"max"`` in ``Mixed_7c``.
    """

    def __init__(self, in_channels: int, pool: Literal["avg", "max"]) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = ConvBNReLU(in_channels, 320, 1)
        self.branch3x3_1 = ConvBNReLU(in_channels, 384, 1)
        self.branch3x3_2a = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBNReLU(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBNReLU(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBNReLU(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = (
            _avg_pool_same(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        )
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(b3dbl),
                self.branch3x3dbl_3b(b3dbl),
                self.branch_pool(pooled),
            ],
            dim=1,
        )


def _tf1_source_positions(in_size: int, out_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Lower/upper source indices and the upper weight of TensorFlow-1 bilinear resizing."""
    position = torch.arange(out_size, dtype=torch.float64, device=device) * (in_size / out_size)
    low = position.floor().long()
    return low, (low + 1).clamp_max(in_size - 1), position - low


def resize_bilinear_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize (B, C, H, W) -> (B, C, size, size) as TensorFlow 1 ``resize_bilinear``
    with ``align_corners=False``: output pixel i samples input position i * in / out."""
    for dim in (2, 3):
        low, high, weight = _tf1_source_positions(x.shape[dim], size, x.device)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        below, above = x.index_select(dim, low), x.index_select(dim, high)
        x = below + (above - below) * weight.to(x.dtype).view(shape)
    return x


class FIDInceptionV3(nn.Module):
    """Inception-v3 (TF 2015-12-05) feature network: images in [0, 1] -> (pool3 features, logits).

    Satisfies the :class:`titok.metrics.feature_stats.FeatureNetwork` protocol; ``name`` is
    ``"inception-v3-2015-12-05"`` (``"-tf"`` appended with the TensorFlow preprocessing). Build
    it with :func:`load_fid_inception` to get the published weights; constructed directly, its
    weights are random.

    Args:
        resize_to: side the input is resized to (299 for the standard metric; None feeds the
            input unresized, which needs at least 75 x 75).
        logits_bias: add the classifier bias to the returned logits (the IS convention leaves
            it out).
        preprocessing: ``"pytorch-fid"`` or ``"tensorflow"`` input convention (module docstring).
    """

    def __init__(
        self,
        resize_to: int | None = INPUT_SIZE,
        logits_bias: bool = False,
        preprocessing: Preprocessing = "pytorch-fid",
    ) -> None:
        if preprocessing not in ("pytorch-fid", "tensorflow"):
            raise ValueError(f"preprocessing must be 'pytorch-fid' or 'tensorflow', got {preprocessing!r}")
        super().__init__()
        self.name = FID_INCEPTION_NAME if preprocessing == "pytorch-fid" else FID_INCEPTION_TF_NAME
        self.preprocessing = preprocessing
        self.resize_to = resize_to
        self.logits_bias = logits_bias
        self.Conv2d_1a_3x3 = ConvBNReLU(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBNReLU(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBNReLU(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBNReLU(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBNReLU(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_LOGITS)

    @property
    def feature_dim(self) -> int:
        return FEATURE_DIM

    @property
    def num_logits(self) -> int:
        return NUM_LOGITS

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] -> features [B, 2048], logits [B, 1008]."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {list(images.shape)}")
        x = images.to(self.fc.weight.dtype)
        if self.preprocessing == "tensorflow":
            x = (x * 255).floor().clamp(0, 255)
            if self.resize_to is not None:
                x = resize_bilinear_tf1(x, self.resize_to)
            x = (x - 128) / 128
        else:
            if self.resize_to is not None:
                x = F.interpolate(
                    x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False
                )
            x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        features = x.mean(dim=(2, 3))
        logits = self.fc(features) if self.logits_bias else features @ self.fc.weight.T
        return features, logits


def fid_weights_cache_path() -> Path:
    """Where the weights are looked for and downloaded to: ``<torch hub dir>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME


def find_fid_weights(weights: str | os.PathLike[str] | None = None, download: bool = True) -> Path:
    """Path to the FID Inception weights: ``weights`` if given, else the torch hub cache.

    When not cached and ``download`` is true, the file is downloaded into the cache.

    Raises:
        CheckpointError: ``weights`` does not exist, or the file is not cached and cannot be
            downloaded; the message gives the URL and the exact path to put the file at.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no such FID Inception weights file (download {FID_WEIGHTS_URL} and pass its path)"
            )
        return path
    target = fid_weights_cache_path()
    for name in (FID_WEIGHTS_FILENAME, *FID_WEIGHTS_ALTERNATIVE_FILENAMES):
        if (target.parent / name).is_file():
            return target.parent / name
    how = f"Download {FID_WEIGHTS_URL} on a machine with network and put it at {target}, or pass its local path."
    if not download:
        raise CheckpointError(f"FID Inception weights not found at {target} (downloading disabled). {how}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(target), progress=False)
    except Exception as exc:  # noqa: BLE001 - every network failure means the same to the user
        raise CheckpointError(
            f"FID Inception weights not found at {target} and the download failed "
            f"({type(exc).__name__}: {exc}). {how}"
        ) from exc
    return target


def _add_missing_batchnorm_counters(
    module: nn.Module, state_dict: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Fill ``*.num_batches_tracked`` (unused at inference) when a file has none of them at all."""
    counters = [name for name in module.state_dict() if name.endswith(".num_batches_tracked")]
    if any(name in state_dict for name in counters):
        return state_dict
    return {**state_dict, **{name: torch.tensor(0, dtype=torch.long) for name in counters}}


def load_fid_inception(
    weights: str | os.PathLike[str] | None = None,
    download: bool = True,
    device: torch.device | str = "cpu",
    preprocessing: Preprocessing = "pytorch-fid",
) -> FIDInceptionV3:
    """The FID Inception-v3 with published weights, in eval mode with gradients off.

    Args:
        weights: local path of ``pt_inception-2015-12-05-6726825d.pth``; None looks in (and, if
            ``download``, downloads to) the torch hub cache, see :func:`fid_weights_cache_path`.
        download: allow downloading when the file is not cached.
        device: where to put the network.
        preprocessing: input convention, see the module docstring.

    Raises:
        CheckpointError: file missing / not downloadable, unreadable, or not matching the
            architecture (names and shapes are checked strictly).
    """
    path = find_fid_weights(weights, download=download)
    model = FIDInceptionV3(preprocessing=preprocessing)
    state_dict = _add_missing_batchnorm_counters(model, read_state_dict(path))
    load_strict(model, state_dict, source=str(path))
    return model.to(device).eval().requires_grad_(False)
