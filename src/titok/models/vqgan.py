"""The MaskGIT-VQGAN: a convolutional 2D tokenizer.

It plays two parts in TiTok: the frozen teacher whose codes ("proxy codes") stage 1 learns to
predict, and the pixel decoder behind the published stage-2 tokenizers. The layout and parameter
names follow the PyTorch conversion of the MaskGIT VQGAN (``encoder.*``, ``decoder.*``,
``quantize.embedding.weight``), so ``maskgit-vqgan-imagenet-f16-256.bin`` loads as it is.

Images are (B, 3, H, W) in [0, 1]; the downsampling factor is ``2 ** (len(channel_mult) - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from titok.fieldtypes import check_field_types
from titok.models.quantizers import QuantizerOutput, VectorQuantizer


@dataclass
class VQGANConfig:
    """Architecture of a MaskGIT-style VQGAN.

    Attributes:
        channel_mult: channel multiplier of each resolution level; one downsampling per level
            but the last (the published model: (1, 1, 2, 2, 4), f=16).
        hidden_channels: base channel count.
        num_res_blocks: residual blocks per level (and in the middle).
        z_channels: code dimension.
        codebook_size: number of codes.
        dropout: dropout inside residual blocks.
        commitment_cost: beta of the commitment loss when training.
    """

    channel_mult: Sequence[int] = (1, 1, 2, 2, 4)
    hidden_channels: int = 128
    num_res_blocks: int = 2
    z_channels: int = 256
    codebook_size: int = 1024
    dropout: float = 0.0
    commitment_cost: float = 0.25
    num_channels: int = 3

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VQGANConfig:
        check_field_types(cls, d, "config.", "")
        return cls(**{k: (tuple(v) if k == "channel_mult" else v) for k, v in d.items()})


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> nn.Conv2d:
    # Stride-1 convolutions with odd kernels: "same" padding is symmetric, k // 2.
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, plus a shortcut.

    When the channel count changes, the shortcut is a 1x1 convolution of the block's *output*
    (not of its input), as in the MaskGIT VQGAN whose weights this must load.
    """

    def __init__(self, cin: int, cout: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv1 = _conv(cin, cout, 3, bias=False)
        self.norm2 = nn.GroupNorm(32, cout, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv(cout, cout, 3, bias=False)
        self.nin_shortcut = _conv(cout, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + (self.nin_shortcut(h) if self.nin_shortcut is not None else x)


class DownLevel(nn.Module):
    """Residual blocks at one resolution, then 2x average pooling (except the last level)."""

    def __init__(self, cin: int, cout: int, num_blocks: int, downsample: bool, dropout: float) -> None:
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(cin if i == 0 else cout, cout, dropout) for i in range(num_blocks)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.block:
            x = blk(x)
        return F.avg_pool2d(x, 2, 2) if self.downsample else x


class UpLevel(nn.Module):
    """Residual blocks at one resolution, then 2x nearest upsampling and a conv (except level 0)."""

    def __init__(self, cin: int, cout: int, num_blocks: int, upsample: bool, dropout: float) -> None:
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(cin if i == 0 else cout, cout, dropout) for i in range(num_blocks)
        )
        self.upsample_conv = _conv(cout, cout, 3) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.block:
            x = blk(x)
        if self.upsample_conv is not None:
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class VQGANEncoder(nn.Module):
    """Images (B, 3, H, W) -> latents (B, z_channels, H/f, W/f)."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        ch, mult = cfg.hidden_channels, tuple(cfg.channel_mult)
        self.conv_in = _conv(cfg.num_channels, ch, 3, bias=False)
        in_mult = (1,) + mult
        self.down = nn.ModuleList(
            DownLevel(ch * in_mult[i], ch * mult[i], cfg.num_res_blocks, i < len(mult) - 1, cfg.dropout)
            for i in range(len(mult))
        )
        mid = ch * mult[-1]
        self.mid = nn.ModuleList(ResnetBlock(mid, mid, cfg.dropout) for _ in range(cfg.num_res_blocks))
        self.norm_out = nn.GroupNorm(32, mid, eps=1e-6)
        self.conv_out = _conv(mid, cfg.z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
        for blk in self.mid:
            x = blk(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class VQGANDecoder(nn.Module):
    """Code vectors (B, z_channels, h, w) -> images (B, 3, h*f, w*f) (not clamped)."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        ch, mult = cfg.hidden_channels, tuple(cfg.channel_mult)
        top = ch * mult[-1]
        self.conv_in = _conv(cfg.z_channels, top, 3)
        self.mid = nn.ModuleList(ResnetBlock(top, top, cfg.dropout) for _ in range(cfg.num_res_blocks))
        # up[i] works at the resolution of level i; they run from the last level down to 0.
        self.up = nn.ModuleList(
            UpLevel(
                ch * (mult[i + 1] if i + 1 < len(mult) else mult[-1]),
                ch * mult[i],
                cfg.num_res_blocks,
                i != 0,
                cfg.dropout,
            )
            for i in range(len(mult))
        )
        self.norm_out = nn.GroupNorm(32, ch * mult[0], eps=1e-6)
        self.conv_out = _conv(ch * mult[0], cfg.num_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        for blk in self.mid:
            x = blk(x)
        for level in reversed(self.up):
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class VQGAN(nn.Module):
    """The MaskGIT-VQGAN: encoder, codebook (plain nearest neighbour) and decoder.

    Args:
        config: architecture; defaults to the published f=16, 1024-code model.
    """

    def __init__(self, config: VQGANConfig | None = None) -> None:
        super().__init__()
        self.config = config or VQGANConfig()
        self.encoder = VQGANEncoder(self.config)
        self.decoder = VQGANDecoder(self.config)
        self.quantize = VectorQuantizer(
            self.config.codebook_size, self.config.z_channels, self.config.commitment_cost, use_l2_norm=False
        )

    def quantize_latents(self, images: torch.Tensor) -> QuantizerOutput:
        """Images (B, 3, H, W) in [0, 1] -> quantizer output over (B, h*w, z) tokens, row-major."""
        z = self.encoder(images)
        return self.quantize(z.flatten(2).transpose(1, 2))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> code ids (B, h, w)."""
        z = self.encoder(images)
        return self.quantize.nearest(z.permute(0, 2, 3, 1))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, h, w, z) -> raw images (B, 3, H, W)."""
        return self.decoder(codes.permute(0, 3, 1, 2).to(self.decoder.conv_in.weight.dtype))

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids (B, h, w) -> images (B, 3, H, W) clamped to [0, 1]."""
        return self.decode_codes(self.quantize.lookup(ids)).clamp(0.0, 1.0)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """Training pass: images -> (raw reconstructions (B, 3, H, W), quantizer output)."""
        z = self.encoder(images)
        b, c, h, w = z.shape
        q = self.quantize(z.flatten(2).transpose(1, 2))
        rec = self.decoder(q.quantized.transpose(1, 2).reshape(b, c, h, w))
        return rec, q
