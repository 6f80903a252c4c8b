"""Configuration of a TiTok tokenizer, and conversion from the authors' config format."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from titok.errors import ConfigError
from titok.fieldtypes import check_field_types
from titok.models.vqgan import VQGANConfig

#: ViT sizes of the paper: name -> (width, depth, heads).
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (256, 4, 4),
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}

DECODER_HEADS = ("proxy", "vqgan", "pixels", "conv")
QUANTIZE_MODES = ("vq", "vae")
HIDDEN_TAILS = ("remove", "token")
CONV_UPSAMPLES = ("nearest", "bilinear")


@dataclass
class TiTokConfig:
    """Everything needed to build a :class:`titok.TiTok`.

    Attributes:
        image_size: input and output side in pixels (multiple of ``patch_size``).
        patch_size: ViT patch side (encoder and decoder).
        encoder_width, encoder_depth, encoder_heads: encoder transformer size.
        decoder_width, decoder_depth, decoder_heads: decoder transformer size.
        num_latent_tokens: K, the length of the 1D token sequence.
        token_size: channels per token (code dimension).
        quantize_mode: "vq" (discrete codes) or "vae" (diagonal Gaussian latents).
        codebook_size: number of codes (VQ).
        use_l2_norm: match latents to codes by cosine (l2-normalised codes), VQ only.
        commitment_cost: beta of the VQ commitment loss.
        decoder_head: "proxy" (stage 1: logits over the proxy codebook), "vqgan" (stage 2:
            softmax-weighted proxy codebook into a VQGAN pixel decoder), "pixels" (each patch
            written by one linear head) or "conv" (not in the authors' models: the patch outputs
            upsampled to pixels by convolutions, :class:`titok.models.upsampler.ConvUpsampler`;
            a decoder with no patch period, for decoder fine-tuning).
        num_proxy_codes: proxy (VQGAN) codebook size for "proxy" and "vqgan" heads.
        legacy_layout: the published L-32/B-64/S-128 encoder projection layout (``is_legacy``).
        pixel_decoder: VQGAN architecture behind the "vqgan" head (its codebook is
            ``num_proxy_codes`` x ``z_channels``).
        dead_code_threshold: 0 (the authors' quantizer) or restart codes whose running usage falls
            below it on latents of the current batch, VQ only; this also initialises the codebook
            from the encoder's outputs at the first step. Not in the authors' models: it keeps a
            small model's codebook in use (see :class:`titok.models.quantizers.DeadCodeRestart`).
        code_usage_decay: decay of the running usage that ``dead_code_threshold`` reads.
        latent_centering: subtract the mean latent token (the batch mean in training, a running
            mean at inference) before quantization, VQ only. Not in the authors' models: it keeps
            short small-scale runs off the mean-image plateau (see :mod:`titok.models.centering`).
        init_std: std of the truncated-normal init of every linear and convolution weight (the
            authors use 0.02 at every width). Only affects freshly initialised models.
        variable_length: the model was trained on token prefixes (the recipe's ``prefix``
            section): its tokens are ordered coarse-to-fine and any first k of the K decode to an
            image. Models without it refuse prefixes unless forced (``force_prefix=True``).
        hidden_tail: how the decoder hides the tokens after a prefix: "remove" (absent from its
            input) or "token" (a learned ``decoder.tail_token`` in their place; only with
            ``variable_length``). See :class:`titok.models.vit.TiTokDecoder`.
        refine_channels: 0 (the authors' models) or the hidden channels of a residual convolutional
            refinement after the "pixels" head (:class:`titok.models.refiner.ConvRefiner`), added
            for decoder fine-tuning; it starts as the identity.
        conv_channels: widths of the "conv" head after each 2x upsampling, one per factor of 2
            in ``patch_size`` (the first is also the width of the projected patch outputs).
        conv_upsample: how the "conv" head doubles its grid: "nearest" (copies, so its first
            convolutions see p x p blocks of equal features and can tell where a patch border is)
            or "bilinear" (interpolates between patch centres).
        decoder_embed_init_std: std of the decoder's token projection (``decoder_embed``) at
            initialisation; None: ``init_std``. Both are knobs for studying how fast a small
            model leaves the mean-image plateau (docs/reproduce.md); larger values did not make
            it leave sooner there. Only affects freshly initialised models.
    """

    image_size: int = 256
    patch_size: int = 16
    encoder_width: int = 1024
    encoder_depth: int = 24
    encoder_heads: int = 16
    decoder_width: int = 1024
    decoder_depth: int = 24
    decoder_heads: int = 16
    num_latent_tokens: int = 32
    token_size: int = 12
    quantize_mode: str = "vq"
    codebook_size: int = 4096
    use_l2_norm: bool = True
    commitment_cost: float = 0.25
    decoder_head: str = "vqgan"
    num_proxy_codes: int = 1024
    legacy_layout: bool = False
    pixel_decoder: VQGANConfig = field(default_factory=VQGANConfig)
    dead_code_threshold: float = 0.0
    code_usage_decay: float = 0.99
    latent_centering: bool = False
    init_std: float = 0.02
    decoder_embed_init_std: float | None = None
    variable_length: bool = False
    hidden_tail: str = "remove"
    refine_channels: int = 0
    conv_channels: tuple[int, ...] = (64, 32, 32)
    conv_upsample: str = "nearest"

    def __post_init__(self) -> None:
        if isinstance(self.pixel_decoder, dict):
            self.pixel_decoder = VQGANConfig.from_dict(self.pixel_decoder)
        self.conv_channels = tuple(self.conv_channels)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first inconsistent field."""
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        for name in ("init_std", "decoder_embed_init_std"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.quantize_mode not in QUANTIZE_MODES:
            raise ConfigError(f"quantize_mode: expected one of {QUANTIZE_MODES}, got {self.quantize_mode!r}")
        if self.dead_code_threshold < 0:
            raise ConfigError(f"dead_code_threshold must be >= 0, got {self.dead_code_threshold}")
        if not 0.0 < self.code_usage_decay < 1.0:
            raise ConfigError(f"code_usage_decay must be in (0, 1), got {self.code_usage_decay}")
        if self.dead_code_threshold > 0 and self.quantize_mode != "vq":
            raise ConfigError(f"dead_code_threshold is for quantize_mode 'vq', got {self.quantize_mode!r}")
        if self.latent_centering and self.quantize_mode != "vq":
            raise ConfigError(f"latent_centering is for quantize_mode 'vq', got {self.quantize_mode!r}")
        if self.hidden_tail not in HIDDEN_TAILS:
            raise ConfigError(f"hidden_tail: expected one of {HIDDEN_TAILS}, got {self.hidden_tail!r}")
        if self.hidden_tail == "token" and not self.variable_length:
            raise ConfigError("hidden_tail 'token' is for variable-length models (variable_length: true)")
        if self.refine_channels < 0:
            raise ConfigError(f"refine_channels must be >= 0, got {self.refine_channels}")
        if self.refine_channels and self.decoder_head != "pixels":
            raise ConfigError(
                f"refine_channels is for the 'pixels' decoder head, got decoder_head {self.decoder_head!r}"
            )
        if self.decoder_head not in DECODER_HEADS:
            raise ConfigError(f"decoder_head: expected one of {DECODER_HEADS}, got {self.decoder_head!r}")
        for side in ("encoder", "decoder"):
            w, h = getattr(self, f"{side}_width"), getattr(self, f"{side}_heads")
            if w % h:
                raise ConfigError(f"{side}_width {w} is not divisible by {side}_heads {h}")
        if self.decoder_head == "vqgan" and self.pixel_decoder.downsample_factor != self.patch_size:
            raise ConfigError(
                f"pixel_decoder upsamples by {self.pixel_decoder.downsample_factor} but patch_size is "
                f"{self.patch_size}: they must be equal for the 'vqgan' head"
            )
        conv = self.conv_channels
        if self.decoder_head == "conv" and (2 ** len(conv) != self.patch_size or min(conv, default=0) < 1):
            raise ConfigError(
                f"conv_channels {list(conv)} upsample by {2 ** len(conv)} but patch_size is "
                f"{self.patch_size}: give one positive width per factor of 2 of patch_size"
            )
        if self.conv_upsample not in CONV_UPSAMPLES:
            raise ConfigError(f"conv_upsample: expected one of {CONV_UPSAMPLES}, got {self.conv_upsample!r}")
        if self.decoder_head == "vqgan":
            for name in ("hidden_channels", "z_channels"):
                if getattr(self.pixel_decoder, name) < 1:
                    raise ConfigError(
                        f"pixel_decoder.{name} must be >= 1, got {getattr(self.pixel_decoder, name)}"
                    )
            widths = [self.pixel_decoder.hidden_channels * m for m in self.pixel_decoder.channel_mult]
            if any(w % 32 for w in widths):
                raise ConfigError(
                    f"pixel_decoder: hidden_channels x channel_mult gives {widths} channels; each must be a "
                    "multiple of 32 (its GroupNorm has 32 groups)"
                )

    def updated(self, **overrides: object) -> TiTokConfig:
        """A copy with ``overrides`` applied; a mapping for ``pixel_decoder`` updates its fields
        (``{"hidden_channels": 32}`` keeps the rest). Raises :class:`ConfigError` for an unknown
        field or an inconsistent result."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown tokenizer config field(s) {unknown}")
        pixel = overrides.get("pixel_decoder")
        if isinstance(pixel, dict):
            current = self.pixel_decoder.to_dict()
            bad = sorted(set(pixel) - set(current))
            if bad:
                raise ConfigError(f"unknown pixel_decoder field(s) {bad}: expected some of {sorted(current)}")
            overrides = {**overrides, "pixel_decoder": VQGANConfig.from_dict({**current, **pixel})}
        return replace(self, **overrides)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pixel_decoder"] = self.pixel_decoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TiTokConfig:
        """Build from :meth:`to_dict` output; an unknown key is a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown TiTok config key(s): {', '.join(unknown)}")
        check_field_types(cls, d, "config.", "")
        return cls(**d)

    @classmethod
    def from_official(cls, vq_model: dict, image_size: int = 256) -> TiTokConfig:
        """Convert the authors' ``model.vq_model`` config section.

        Their keys: ``vit_enc_model_size``, ``vit_dec_model_size``, ``vit_enc_patch_size``,
        ``vit_dec_patch_size``, ``num_latent_tokens``, ``token_size``, ``codebook_size``,
        ``use_l2_norm``, ``commitment_cost``, ``quantize_mode`` (default "vq"),
        ``finetune_decoder``, ``is_legacy`` (default true).
        """
        try:
            enc = VIT_SIZES[vq_model["vit_enc_model_size"]]
            dec = VIT_SIZES[vq_model["vit_dec_model_size"]]
            patch = int(vq_model["vit_enc_patch_size"])
            if int(vq_model.get("vit_dec_patch_size", patch)) != patch:
                raise ConfigError("different encoder and decoder patch sizes are not supported")
            legacy = bool(vq_model.get("is_legacy", True))
            mode = vq_model.get("quantize_mode", "vq")
            if legacy:
                head = "vqgan" if vq_model.get("finetune_decoder", True) else "proxy"
            else:
                head = "pixels"
            return cls(
                image_size=image_size,
                patch_size=patch,
                encoder_width=enc[0],
                encoder_depth=enc[1],
                encoder_heads=enc[2],
                decoder_width=dec[0],
                decoder_depth=dec[1],
                decoder_heads=dec[2],
                num_latent_tokens=int(vq_model["num_latent_tokens"]),
                token_size=int(vq_model["token_size"]),
                quantize_mode=mode,
                codebook_size=int(vq_model.get("codebook_size", 4096)),
                use_l2_norm=bool(vq_model.get("use_l2_norm", False)),
                commitment_cost=float(vq_model.get("commitment_cost", 0.25)),
                decoder_head=head,
                legacy_layout=legacy,
            )
        except KeyError as exc:
            raise ConfigError(f"authors' vq_model config lacks the key {exc.args[0]!r}") from exc
