"""The TiTok ViT encoder and decoder.

Encoder: image patches + a class token, then K learnable latent tokens appended; a pre-norm
transformer; only the K latent outputs are kept and projected to the code dimension. The
latent tokens have no fixed link to image positions: the result is a 1D sequence.

Decoder: the K (quantized) tokens projected up to the decoder width, appended to a class token
and a mask token repeated once per patch; the patch outputs go to a head (proxy-code logits or
pixels).

Parameter names follow the authors' checkpoints (``patch_embed``, ``class_embedding``,
``positional_embedding``, ``latent_token_positional_embedding``, ``ln_pre``, ``transformer.N``,
``ln_post``, ``conv_out``; ``decoder_embed``, ``mask_token``, ``ffn``).
"""

from __future__ import annotations

import torch
from einops.layers.torch import Rearrange
from torch import nn

from titok.models.config import HIDDEN_TAILS
from titok.models.transformer import ResidualAttentionBlock


def _scaled_randn(*shape: int, width: int) -> nn.Parameter:
    return nn.Parameter(width**-0.5 * torch.randn(*shape))


class TiTokEncoder(nn.Module):
    """Images (B, 3, H, W) + latent tokens (K, D) -> latents (B, K, out_channels).

    Args:
        image_size: input side; a multiple of ``patch_size``.
        patch_size: side of a square patch.
        width, depth, num_heads: transformer size.
        num_latent_tokens: K.
        out_channels: channels per output token (``token_size``, or twice it in VAE mode).
        legacy_layout: reproduce the published L-32/B-64/S-128 checkpoints, whose projection
            reads the (K, D) latent outputs reinterpreted in memory as (D, K) before the
            1x1 convolution. Later checkpoints (``is_legacy: false``) project each token.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        depth: int,
        num_heads: int,
        num_latent_tokens: int,
        out_channels: int,
        legacy_layout: bool = False,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.grid_size = image_size // patch_size
        self.num_latent_tokens = num_latent_tokens
        self.legacy_layout = legacy_layout
        self.patch_embed = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.class_embedding = _scaled_randn(1, width, width=width)
        self.positional_embedding = _scaled_randn(self.grid_size**2 + 1, width, width=width)
        self.latent_token_positional_embedding = _scaled_randn(num_latent_tokens, width, width=width)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.ModuleList(ResidualAttentionBlock(width, num_heads) for _ in range(depth))
        self.ln_post = nn.LayerNorm(width)
        self.conv_out = nn.Conv2d(width, out_channels, 1)

    def forward(self, images: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W), latent_tokens (K, D) -> (B, K, out_channels)."""
        b = images.shape[0]
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, g*g, D)
        cls = self.class_embedding.to(x.dtype).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        lat = (latent_tokens + self.latent_token_positional_embedding).to(x.dtype).expand(b, -1, -1)
        x = self.ln_pre(torch.cat([x, lat], dim=1))
        for block in self.transformer:
            x = block(x)
        lat = self.ln_post(x[:, -self.num_latent_tokens :])  # (B, K, D)
        if self.legacy_layout:
            k, d = lat.shape[1:]
            lat = lat.reshape(b, d, k).transpose(1, 2)
        w = self.conv_out.weight.flatten(1)
        return torch.nn.functional.linear(lat, w.to(lat.dtype), self.conv_out.bias.to(lat.dtype))


class ProxyCodeHead(nn.Module):
    """Per-patch logits over the proxy (VQGAN) codebook: 1x1 conv, tanh, 1x1 conv.

    (B, D, g, g) -> (B, num_codes, g, g).
    """

    def __init__(self, width: int, num_codes: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(
            nn.Conv2d(width, 2 * width, 1), nn.Tanh(), nn.Conv2d(2 * width, num_codes, 1)
        )
        self.conv_out = nn.Identity()


class PixelHead(nn.Module):
    """Pixels straight from the patch outputs: 1x1 conv to p*p*3, unpatchify, 3x3 conv.

    (B, D, g, g) -> (B, 3, g*p, g*p).
    """

    def __init__(self, width: int, patch_size: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(
            nn.Conv2d(width, patch_size * patch_size * 3, 1),
            Rearrange("b (p1 p2 c) h w -> b c (h p1) (w p2)", p1=patch_size, p2=patch_size),
        )
        self.conv_out = nn.Conv2d(3, 3, 3, padding=1)


class ConvFeatureHead(nn.Module):
    """Patch outputs projected for a convolutional upsampler: 1x1 conv to ``channels``.

    (B, D, g, g) -> (B, channels, g, g); the "conv" head of :class:`titok.TiTok` upsamples this
    to pixels with a :class:`titok.models.upsampler.ConvUpsampler`.
    """

    def __init__(self, width: int, channels: int) -> None:
        super().__init__()
        self.ffn = nn.Conv2d(width, channels, 1)
        self.conv_out = nn.Identity()


class TiTokDecoder(nn.Module):
    """Tokens (B, K, C) -> head output over the patch grid.

    Args:
        image_size, patch_size: output geometry (grid g = image_size / patch_size).
        width, depth, num_heads: transformer size.
        num_latent_tokens: K.
        token_size: channels C of each input token.
        head: "proxy" (logits over ``num_proxy_codes``, (B, num_proxy_codes, g, g)), "pixels"
            ((B, 3, H, W)) or "conv" (features for a convolutional decoder, (B, feature_channels,
            g, g)).
        num_proxy_codes: proxy codebook size for the "proxy" head.
        feature_channels: output channels of the "conv" head.
        hidden_tail: how a prefix of k < K tokens is decoded. "remove": the tail positions are
            absent (a shorter input, or hidden from attention when the prefix length varies within
            a batch); "token": each of them holds a learned ``tail_token`` (plus its positional
            embedding), so the decoder always reads K tokens.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        depth: int,
        num_heads: int,
        num_latent_tokens: int,
        token_size: int,
        head: str = "pixels",
        num_proxy_codes: int = 1024,
        hidden_tail: str = "remove",
        feature_channels: int = 64,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if hidden_tail not in HIDDEN_TAILS:
            raise ValueError(f"unknown hidden_tail {hidden_tail!r}: expected one of {HIDDEN_TAILS}")
        self.grid_size = image_size // patch_size
        self.num_latent_tokens = num_latent_tokens
        self.tail_token = _scaled_randn(1, 1, width, width=width) if hidden_tail == "token" else None
        self.decoder_embed = nn.Linear(token_size, width)
        self.class_embedding = _scaled_randn(1, width, width=width)
        self.positional_embedding = _scaled_randn(self.grid_size**2 + 1, width, width=width)
        self.mask_token = _scaled_randn(1, 1, width, width=width)
        self.latent_token_positional_embedding = _scaled_randn(num_latent_tokens, width, width=width)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.ModuleList(ResidualAttentionBlock(width, num_heads) for _ in range(depth))
        self.ln_post = nn.LayerNorm(width)
        if head == "proxy":
            parts: nn.Module = ProxyCodeHead(width, num_proxy_codes)
        elif head == "pixels":
            parts = PixelHead(width, patch_size)
        elif head == "conv":
            parts = ConvFeatureHead(width, feature_channels)
        else:
            raise ValueError(f"unknown decoder head {head!r}: expected 'proxy', 'pixels' or 'conv'")
        # The head's layers sit directly on the decoder, under the authors' names.
        self.ffn = parts.ffn
        self.conv_out = parts.conv_out

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, k, C), 1 <= k <= K -> the head's output (logits, pixels or features).

        ``lengths`` (B,) (training with prefixes): decode only the first ``lengths[i]`` tokens of
        sample i; the others are hidden as ``hidden_tail`` says. None: all k tokens are read.
        """
        b, k, _ = tokens.shape
        x = self.decoder_embed(tokens)
        key_mask = None
        positions = torch.arange(self.num_latent_tokens, device=tokens.device)
        if self.tail_token is not None:
            if k < self.num_latent_tokens:
                pad = self.tail_token.to(x.dtype).expand(b, self.num_latent_tokens - k, -1)
                x = torch.cat([x, pad], dim=1)
            if lengths is not None:
                # torch.where keeps the tail token in the graph even when no position is hidden.
                hidden = positions[None, :, None] >= lengths[:, None, None]
                x = torch.where(hidden, self.tail_token.to(x.dtype), x)
            k = self.num_latent_tokens
        elif lengths is not None:
            key_mask = positions[None, :k] < lengths[:, None]  # (B, k)
        x = x + self.latent_token_positional_embedding[:k].to(x.dtype)
        g2 = self.grid_size**2
        masks = (
            torch.cat([self.class_embedding.expand(b, 1, -1), self.mask_token.expand(b, g2, -1)], dim=1)
            + self.positional_embedding
        )
        x = self.ln_pre(torch.cat([masks.to(x.dtype), x], dim=1))
        if key_mask is not None:
            key_mask = torch.cat([key_mask.new_ones(b, 1 + g2), key_mask], dim=1)
        for block in self.transformer:
            x = block(x, key_mask)
        x = self.ln_post(x[:, 1 : 1 + g2])  # (B, g*g, D)
        x = x.transpose(1, 2).reshape(b, -1, self.grid_size, self.grid_size)
        return self.conv_out(self.ffn(x))
