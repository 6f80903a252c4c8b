"""Per-image reconstruction quality: PSNR and SSIM.

Both take images (B, 3, H, W) in [0, data_range] and return one value per image, shape [B].
They are computed on the RGB channels directly (not on luma): each channel is scored on its
own and the channel scores are averaged.

SSIM follows Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, population (not sample) local variances, and a "valid" window (no padding), so the
mean is over the (H - 10) x (W - 10) positions where the window fits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {list(a.shape)} and {list(b.shape)}")
    if a.dim() != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {list(a.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, 10 log10(data_range^2 / MSE); inf if identical.

    Args:
        a, b: images (B, C, H, W) with values in [0, data_range].

    Returns:
        Tensor [B] (float64).
    """
    _check_pair(a, b)
    mse = (a.double() - b.double()).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of each channel, valid positions only. (B, C, H, W) -> (B, C, H', W')."""
    channels = x.shape[1]
    horizontal = window.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = window.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(x, horizontal, groups=channels), vertical, groups=channels)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per image (mean over channels and window positions).

    Args:
        a, b: images (B, C, H, W) with values in [0, data_range]; H and W at least 11.

    Returns:
        Tensor [B] (float64): 1 for identical images, symmetric in ``a`` and ``b``.
    """
    _check_pair(a, b)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {list(a.shape[-2:])}"
        )
    x, y = a.double(), b.double()
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, x.dtype, x.device)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x.square()
    var_y = _blur(y * y, window) - mu_y.square()
    cov_xy = _blur(x * y, window) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x.square() + mu_y.square() + c1)
    structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    return (luminance * structure).flatten(1).mean(dim=1)
