"""A 2D VQGAN seen as a tokenizer of flattened code grids: the baseline TiTok is compared with.

A VQGAN with downsampling factor f turns an S x S image into an (S/f) x (S/f) grid of code ids;
:class:`GridTokenizer` flattens that grid row-major into a sequence [B, N] (N = (S/f)^2) and
exposes the same inference calls as :class:`~titok.models.titok.TiTok` (``encode``, ``decode``,
``encode_latents``, ``num_tokens``), so pretokenization, generators and evaluation treat 1D and
2D tokens alike.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from titok.errors import TitokError
from titok.images import ImageLike, to_batch
from titok.models.vqgan import VQGAN
from titok.precision import precision


class GridTokenizer(nn.Module):
    """Row-major flattened code grids of a VQGAN at a fixed image size.

    Args:
        vqgan: the 2D tokenizer.
        image_size: side of the (square) images it tokenizes; a multiple of the VQGAN's
            downsampling factor.
    """

    def __init__(self, vqgan: VQGAN, image_size: int) -> None:
        super().__init__()
        factor = vqgan.config.downsample_factor
        if image_size % factor:
            raise TitokError(f"image_size {image_size} is not a multiple of the VQGAN's factor {factor}")
        self.vqgan = vqgan
        self.image_size = image_size
        self.grid = image_size // factor

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], image_size: int) -> GridTokenizer:
        """A VQGAN export folder (or weights file, see :func:`titok.loading.load_vqgan`)."""
        from titok.loading.loaders import load_vqgan

        return cls(load_vqgan(str(path)), image_size)

    @property
    def device(self) -> torch.device:
        return next(self.vqgan.parameters()).device

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def codebook_size(self) -> int:
        return self.vqgan.config.codebook_size

    @property
    def is_vae(self) -> bool:
        return False

    def _autocast(self, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
        """The precision rule of :mod:`titok.precision`, as for :class:`~titok.models.titok.TiTok`."""
        return precision(self.device.type, dtype)

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder output before quantization: images (B, 3, S, S) -> (B, N, z_channels)."""
        return self.vqgan.encoder(images).flatten(2).transpose(1, 2)

    @torch.inference_mode()
    def encode(
        self, images: ImageLike | Sequence[ImageLike], batch_size: int = 32, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Images -> code ids [B, N] (row-major grid)."""
        batch = to_batch(images, self.image_size)
        out = []
        for chunk in batch.split(batch_size):
            with self._autocast(dtype):
                z = self.encode_latents(chunk.to(self.device))
            out.append(self.vqgan.quantize.nearest(z.float()))
        return torch.cat(out)

    @torch.inference_mode()
    def decode(
        self, tokens: torch.Tensor, batch_size: int = 32, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Code ids [B, N] -> images (B, 3, S, S) in [0, 1]."""
        if tokens.ndim != 2 or tokens.shape[1] != self.num_tokens:
            raise TitokError(f"expected tokens of shape (B, {self.num_tokens}), got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook_size):
            raise TitokError(f"token ids must lie in [0, {self.codebook_size})")
        out = []
        for chunk in tokens.split(batch_size):
            grid = chunk.to(self.device).long().view(-1, self.grid, self.grid)
            with self._autocast(dtype):
                out.append(self.vqgan.decode(grid).float())
        return torch.cat(out)

    @torch.inference_mode()
    def reconstruct(
        self, images: ImageLike | Sequence[ImageLike], batch_size: int = 32, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Encode then decode: images -> reconstructions (B, 3, S, S) in [0, 1]."""
        return self.decode(self.encode(images, batch_size, dtype), batch_size, dtype)
