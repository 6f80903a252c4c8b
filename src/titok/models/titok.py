"""TiTok: the 1D image tokenizer (encoder, quantizer, decoder, optional VQGAN pixel decoder)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from titok.errors import TitokError
from titok.images import ImageLike, to_batch
from titok.models.centering import LatentCentering
from titok.models.config import TiTokConfig
from titok.models.prefixes import check_num_tokens
from titok.models.quantizers import DiagonalGaussian, QuantizerOutput, VectorQuantizer
from titok.models.refiner import ConvRefiner
from titok.models.upsampler import ConvUpsampler
from titok.models.vit import TiTokDecoder, TiTokEncoder
from titok.models.vqgan import VQGANDecoder
from titok.precision import precision


@dataclass
class TiTokOutput:
    """Training-pass output.

    Attributes:
        decoded: proxy-code logits (B, num_proxy_codes, g, g) for the "proxy" head, otherwise
            raw pixels (B, 3, H, W) (not clamped).
        quantizer: the quantizer's output (tokens, losses).
    """

    decoded: torch.Tensor
    quantizer: QuantizerOutput


def _init_weights(module: nn.Module, std: float) -> None:
    if isinstance(module, nn.Linear | nn.Conv2d):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class TiTok(nn.Module):
    """The TiTok tokenizer: images <-> a 1D sequence of K tokens.

    Build with ``TiTok(config)``, ``TiTok.from_preset(name)`` or load weights with
    ``TiTok.from_pretrained(name_or_path)``. Images are float tensors (B, 3, H, W) in [0, 1].

    Args:
        config: the architecture.
    """

    def __init__(self, config: TiTokConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config
        vae = c.quantize_mode == "vae"
        self.encoder = TiTokEncoder(
            c.image_size,
            c.patch_size,
            c.encoder_width,
            c.encoder_depth,
            c.encoder_heads,
            c.num_latent_tokens,
            out_channels=2 * c.token_size if vae else c.token_size,
            legacy_layout=c.legacy_layout,
        )
        self.decoder = TiTokDecoder(
            c.image_size,
            c.patch_size,
            c.decoder_width,
            c.decoder_depth,
            c.decoder_heads,
            c.num_latent_tokens,
            c.token_size,
            head=c.decoder_head if c.decoder_head in ("pixels", "conv") else "proxy",
            num_proxy_codes=c.num_proxy_codes,
            hidden_tail=c.hidden_tail,
            feature_channels=c.conv_channels[0],
        )
        self.apply(lambda m: _init_weights(m, c.init_std))
        if c.decoder_embed_init_std is not None:
            nn.init.trunc_normal_(self.decoder.decoder_embed.weight, std=c.decoder_embed_init_std)
        self.latent_tokens = nn.Parameter(
            c.encoder_width**-0.5 * torch.randn(c.num_latent_tokens, c.encoder_width)
        )
        self.latent_centering = (
            LatentCentering(c.num_latent_tokens, c.token_size) if c.latent_centering else None
        )
        self.quantize: nn.Module = (
            DiagonalGaussian()
            if vae
            else VectorQuantizer(
                c.codebook_size,
                c.token_size,
                c.commitment_cost,
                c.use_l2_norm,
                dead_code_threshold=c.dead_code_threshold,
                usage_decay=c.code_usage_decay,
            )
        )
        if c.decoder_head == "vqgan":
            self.pixel_quantize = VectorQuantizer(
                c.num_proxy_codes, c.pixel_decoder.z_channels, use_l2_norm=False
            )
            self.pixel_decoder = VQGANDecoder(c.pixel_decoder)
        if c.decoder_head == "conv":
            self.upsampler = ConvUpsampler(c.conv_channels, c.conv_upsample)
        self.refiner = ConvRefiner(c.refine_channels) if c.refine_channels else None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> TiTok:
        """A freshly initialised model of a named preset (see ``titok.presets()``)."""
        from titok.models.presets import tokenizer_config

        return cls(tokenizer_config(name, **overrides))

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        preset: str | None = None,
        device: str | torch.device | None = None,
    ) -> TiTok:
        """Load weights: a preset name, a hub repo id, a local folder or a weights file.

        A single weights file (``.safetensors``, ``.bin``) needs ``preset`` to know its
        architecture. Where the files are found: :mod:`titok.loading.tokenizers`; loading is strict
        (:func:`titok.loading.weights.load_strict`).
        """
        from titok.loading.tokenizers import find_tokenizer
        from titok.loading.weights import build_and_load

        files = find_tokenizer(name_or_path, preset=preset)
        model = build_and_load(lambda: cls(files.config), files.weights, files.source)
        return model.to(device) if device is not None else model

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to ``directory``; returns the folder."""
        from titok.loading.weights import save_model

        return save_model(self, directory, kind="tokenizer", config=self.config.to_dict())

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.latent_tokens.device

    @property
    def is_vae(self) -> bool:
        return self.config.quantize_mode == "vae"

    @property
    def num_tokens(self) -> int:
        return self.config.num_latent_tokens

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def image_size(self) -> int:
        return self.config.image_size

    # ------------------------------------------------------------------ building blocks
    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Continuous latent tokens before quantization: (B, 3, H, W) -> (B, K, C) (2C for VAE)."""
        z = self.encoder(images, self.latent_tokens)
        return z if self.latent_centering is None else self.latent_centering(z)

    def decode_latents(self, quantized: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Quantized tokens (B, k, C), k <= K -> raw decoder output.

        Proxy-code logits (B, num_proxy_codes, g, g) for the "proxy" head; otherwise pixels
        (B, 3, H, W), not clamped. The "vqgan" head softmax-weights the proxy codebook per patch
        and runs the VQGAN decoder on the result; the "conv" head upsamples the projected patch
        outputs by convolutions. ``lengths`` (B,): decode only the first
        ``lengths[i]`` tokens of sample i (training on prefixes, see :mod:`titok.training.prefix`).
        """
        out = self.decoder(quantized, lengths)
        if self.config.decoder_head == "vqgan":
            codes = torch.einsum(
                "nchw,cd->ndhw", out.float().softmax(dim=1), self.pixel_quantize.embedding.weight.float()
            )
            out = self.pixel_decoder(codes.to(out.dtype))
        elif self.config.decoder_head == "conv":
            out = self.upsampler(out)
        elif self.refiner is not None:
            out = self.refiner(out)
        return out

    def forward(self, images: torch.Tensor, lengths: torch.Tensor | None = None) -> TiTokOutput:
        """Training pass: images (B, 3, H, W) in [0, 1] -> decoded output and quantizer output.

        ``lengths`` (B,) in [1, K]: the decoder sees only the first ``lengths[i]`` quantized
        tokens of sample i (the quantizer and its losses still cover all K); None: all K.
        ``lengths`` (m*B,): each image is encoded once and decoded m times, copy j from
        ``lengths[j*B:(j+1)*B]``; the output is (m*B, ...), copy-major (targets repeat with
        ``targets.repeat(m, ...)``).
        """
        q = self.quantize(self.encode_latents(images))
        quantized = q.quantized
        if lengths is not None and lengths.shape[0] != quantized.shape[0]:
            copies, rest = divmod(lengths.shape[0], quantized.shape[0])
            if rest:
                raise ValueError(
                    f"lengths has {lengths.shape[0]} entries for {quantized.shape[0]} images: "
                    "expected a multiple of the batch size"
                )
            quantized = quantized.repeat(copies, 1, 1)
        return TiTokOutput(decoded=self.decode_latents(quantized, lengths), quantizer=q)

    def tokens_to_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """Code ids (B, K) (VQ) -> code vectors (B, K, C); VAE latents (B, K, C) pass through."""
        if self.is_vae:
            return tokens.float()
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TitokError(f"expected integer token ids, got dtype {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.codebook_size):
            raise TitokError(
                f"token ids must lie in [0, {self.config.codebook_size}), "
                f"got range [{int(tokens.min())}, {int(tokens.max())}]"
            )
        return self.quantize.lookup(tokens.long())

    # ------------------------------------------------------------------ inference API
    def _autocast(self, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
        """The precision of an inference call (:func:`titok.precision.precision`): None follows the
        caller's autocast, float32 forces full precision, bfloat16 autocasts to it."""
        return precision(self.device.type, dtype)

    def check_prefix(self, num_tokens: int, force_prefix: bool = False) -> int:
        """Check a prefix length k for this model; returns it.

        1 <= k <= K always; k < K only for a model trained on prefixes (``config.variable_length``)
        unless ``force_prefix``: the tokens of a fixed-length model are not ordered, so the
        decoder of such a model was never shown a prefix and decodes one poorly.
        """
        k_max = self.config.num_latent_tokens
        check_num_tokens(num_tokens, k_max)
        if num_tokens < k_max and not (self.config.variable_length or force_prefix):
            raise TitokError(
                f"this model was trained on all {k_max} tokens only (config.variable_length is false), so a "
                f"prefix of {num_tokens} tokens decodes poorly; use a model trained with prefix.enabled, or pass "
                "force_prefix=True (--force-prefix) to decode it anyway"
            )
        return num_tokens

    def _check_tokens_shape(self, tokens: torch.Tensor, force_prefix: bool = False) -> None:
        k = self.config.num_latent_tokens
        want = f"(B, k, {self.config.token_size})" if self.is_vae else "(B, k)"
        ndim = 3 if self.is_vae else 2
        if (
            tokens.ndim != ndim
            or (self.is_vae and tokens.shape[2] != self.config.token_size)
            or not 1 <= tokens.shape[1] <= k
        ):
            raise TitokError(f"expected tokens of shape {want} with 1 <= k <= {k}, got {tuple(tokens.shape)}")
        self.check_prefix(int(tokens.shape[1]), force_prefix)

    @torch.inference_mode()
    def encode(
        self,
        images: ImageLike | Sequence[ImageLike],
        batch_size: int = 32,
        dtype: torch.dtype | None = None,
        sample: bool = False,
        num_tokens: int | None = None,
        force_prefix: bool = False,
    ) -> torch.Tensor:
        """Images -> tokens (all K, or the first ``num_tokens``).

        Args:
            images: a tensor (B, 3, H, W) or (3, H, W) in [0, 1], a PIL image, a path, or a list
                of those. Inputs not at ``image_size`` are resized (shorter side) and
                center-cropped, see :mod:`titok.images`.
            batch_size: images per forward pass.
            dtype: ``torch.bfloat16`` autocasts the encoder to it, ``torch.float32`` forces full
                precision, None follows the caller (its autocast, if it opened one).
            sample: VAE only: draw from the posterior instead of taking its mean.
            num_tokens: keep the first k tokens (a model trained on prefixes orders them
                coarse-to-fine); None: all K. See :meth:`check_prefix`.
            force_prefix: allow k < K for a model not trained on prefixes.

        Returns:
            VQ: LongTensor (B, k) of code ids. VAE: FloatTensor (B, k, token_size).
        """
        k = (
            self.config.num_latent_tokens
            if num_tokens is None
            else self.check_prefix(num_tokens, force_prefix)
        )
        batch = to_batch(images, self.config.image_size)
        out = []
        for chunk in batch.split(batch_size):
            with self._autocast(dtype):
                z = self.encode_latents(chunk.to(self.device))
            if self.is_vae:
                mean, logvar = DiagonalGaussian.split(z)
                out.append(mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean)
            else:
                out.append(self.quantize.nearest(z))
        return torch.cat(out)[:, :k]

    @torch.inference_mode()
    def decode(
        self,
        tokens: torch.Tensor,
        batch_size: int = 32,
        dtype: torch.dtype | None = None,
        force_prefix: bool = False,
    ) -> torch.Tensor:
        """Tokens (B, k) (VQ ids) or latents (B, k, C) (VAE) -> images (B, 3, H, W) in [0, 1].

        k is K, or any 1 <= k <= K for a model trained on prefixes (:meth:`check_prefix`).
        A stage-1 model ("proxy" head) has no pixel decoder: decode its proxy codes with the
        teacher VQGAN (:meth:`decode_proxy_codes`). ``dtype`` as for :meth:`encode`.
        """
        if self.config.decoder_head == "proxy":
            raise TitokError(
                "this is a stage-1 model: it predicts proxy codes, not pixels; use decode_proxy_codes() "
                "and the teacher VQGAN's decode()"
            )
        self._check_tokens_shape(tokens, force_prefix)
        out = []
        for chunk in tokens.split(batch_size):
            latents = self.tokens_to_latents(chunk.to(self.device))
            with self._autocast(dtype):
                out.append(self.decode_latents(latents).float().clamp(0.0, 1.0))
        return torch.cat(out)

    @torch.inference_mode()
    def decode_proxy_codes(self, tokens: torch.Tensor, force_prefix: bool = False) -> torch.Tensor:
        """Stage-1 model: tokens (B, k) -> the most likely proxy codes (B, g, g)."""
        if self.config.decoder_head != "proxy":
            raise TitokError("decode_proxy_codes() is for stage-1 models (decoder_head='proxy')")
        self._check_tokens_shape(tokens, force_prefix)
        return self.decoder(self.tokens_to_latents(tokens.to(self.device))).argmax(dim=1)

    @torch.inference_mode()
    def reconstruct(
        self,
        images: ImageLike | Sequence[ImageLike],
        batch_size: int = 32,
        dtype: torch.dtype | None = None,
        num_tokens: int | None = None,
        force_prefix: bool = False,
    ) -> torch.Tensor:
        """Encode then decode (from the first ``num_tokens`` tokens, None: all K): images ->
        reconstructions (B, 3, H, W) in [0, 1]."""
        tokens = self.encode(images, batch_size, dtype, num_tokens=num_tokens, force_prefix=force_prefix)
        return self.decode(tokens, batch_size, dtype, force_prefix=force_prefix)
