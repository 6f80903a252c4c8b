"""Named tokenizer presets: the published TiTok models and tiny CPU-sized ones.

Each published preset carries the authors' ``vq_model`` config (converted by
:meth:`TiTokConfig.from_official`) and where its weights are published.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from titok.errors import ConfigError
from titok.models.config import TiTokConfig
from titok.models.vqgan import VQGANConfig


@dataclass(frozen=True)
class TokenizerPreset:
    """A named architecture, and for published models where the weights live.

    Attributes:
        name: preset name (``titok-l32``).
        description: one line for listings.
        official: the authors' ``vq_model`` config, for published models.
        config: our config, for unpublished presets.
        hub_repo: hub repo with ``config.json`` + ``model.safetensors``.
        raw_repo, raw_file: hub location of the authors' raw state-dict file, if any.
    """

    name: str
    description: str
    official: dict | None = None
    config: TiTokConfig | None = None
    hub_repo: str | None = None
    raw_repo: str | None = None
    raw_file: str | None = None

    def build_config(self) -> TiTokConfig:
        if self.official is not None:
            return TiTokConfig.from_official(self.official)
        assert self.config is not None
        return dataclasses.replace(self.config)


def _vq(size_enc: str, size_dec: str, k: int, **extra: object) -> dict:
    d = {
        "codebook_size": 4096,
        "token_size": 12,
        "use_l2_norm": True,
        "commitment_cost": 0.25,
        "vit_enc_model_size": size_enc,
        "vit_dec_model_size": size_dec,
        "vit_enc_patch_size": 16,
        "vit_dec_patch_size": 16,
        "num_latent_tokens": k,
        "finetune_decoder": True,
    }
    d.update(extra)
    return d


def _vq8k(size_enc: str, k: int) -> dict:
    return _vq(
        size_enc,
        "large",
        k,
        codebook_size=8192,
        token_size=64,
        use_l2_norm=False,
        finetune_decoder=False,
        is_legacy=False,
    )


def _vae(size_enc: str, k: int) -> dict:
    return {
        "quantize_mode": "vae",
        "token_size": 16,
        "vit_enc_model_size": size_enc,
        "vit_dec_model_size": "large",
        "vit_enc_patch_size": 16,
        "vit_dec_patch_size": 16,
        "num_latent_tokens": k,
        "finetune_decoder": False,
        "is_legacy": False,
    }


_SIZE = {"l": "large", "b": "base", "s": "small"}
_PRESETS: dict[str, TokenizerPreset] = {}


def _add(p: TokenizerPreset) -> None:
    _PRESETS[p.name] = p


for _s, _k in (("l", 32), ("b", 64), ("s", 128)):
    _add(
        TokenizerPreset(
            f"titok-{_s}{_k}",
            f"TiTok-{_s.upper()}-{_k}: {_k} tokens, 4096 codes, VQGAN pixel decoder (stage 2), ImageNet 256",
            official=_vq(_SIZE[_s], _SIZE[_s], _k),
            hub_repo=f"yucornetto/tokenizer_titok_{_s}{_k}_imagenet",
            raw_repo="fun-research/TiTok",
            raw_file=f"tokenizer_titok_{_s}{_k}.bin",
        )
    )
    _add(
        TokenizerPreset(
            f"titok-{_s}{_k}-stage1",
            f"TiTok-{_s.upper()}-{_k} in its stage-1 form: decoder predicts 1024 proxy codes",
            official=_vq(_SIZE[_s], _SIZE[_s], _k, finetune_decoder=False),
        )
    )
for _e, _k in (("b", 64), ("b", 128), ("s", 256)):
    _add(
        TokenizerPreset(
            f"titok-{_e}l{_k}-vq8k",
            f"TiTok-{_e.upper()}L-{_k} VQ: {_k} tokens, 8192 x 64 codebook, direct pixels, ImageNet 256",
            official=_vq8k(_SIZE[_e], _k),
            hub_repo=f"yucornetto/tokenizer_titok_{_e}l{_k}_vq8k_imagenet",
        )
    )
for _e, _k in (("l", 32), ("b", 64), ("b", 128)):
    _add(
        TokenizerPreset(
            f"titok-{_e}l{_k}-vae",
            f"TiTok-{_e.upper()}L-{_k} VAE: {_k} continuous tokens of 16 channels, direct pixels, ImageNet 256",
            official=_vae(_SIZE[_e], _k),
            hub_repo=f"yucornetto/tokenizer_titok_{_e}l{_k}_vae_c16_imagenet",
        )
    )

_TINY = dict(
    encoder_width=256,
    encoder_depth=4,
    encoder_heads=4,
    decoder_width=256,
    decoder_depth=4,
    decoder_heads=4,
    token_size=12,
    codebook_size=1024,
    use_l2_norm=True,
    decoder_head="pixels",
    legacy_layout=False,
    num_proxy_codes=1024,
)
_add(
    TokenizerPreset(
        "titok-tiny-32",
        "tiny CPU model: 32 px, patch 4, 16 tokens, 1024 codes, direct pixels",
        config=TiTokConfig(
            image_size=32,
            patch_size=4,
            num_latent_tokens=16,
            pixel_decoder=VQGANConfig(
                channel_mult=(1, 1, 2), hidden_channels=32, num_res_blocks=1, z_channels=64
            ),
            **{**_TINY, "encoder_width": 192, "decoder_width": 192, "encoder_heads": 3, "decoder_heads": 3},
        ),
    )
)
_add(
    TokenizerPreset(
        "titok-tiny-64",
        "tiny CPU model: 64 px, patch 8, 32 tokens, 1024 codes, direct pixels",
        config=TiTokConfig(
            image_size=64,
            patch_size=8,
            num_latent_tokens=32,
            pixel_decoder=VQGANConfig(
                channel_mult=(1, 1, 2, 2), hidden_channels=64, num_res_blocks=1, z_channels=64
            ),
            **_TINY,
        ),
    )
)


def tokenizer_presets() -> dict[str, TokenizerPreset]:
    """All tokenizer presets by name."""
    return dict(_PRESETS)


def get_preset(name: str) -> TokenizerPreset:
    """The preset called ``name``; an unknown name is a :class:`ConfigError` listing close ones."""
    try:
        return _PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_PRESETS), n=4, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(_PRESETS)}"
        raise ConfigError(f"unknown tokenizer preset {name!r}{hint}") from None


def tokenizer_config(name: str, **overrides: object) -> TiTokConfig:
    """The config of preset ``name`` with fields replaced by ``overrides``."""
    cfg = get_preset(name).build_config()
    known = {f.name for f in dataclasses.fields(TiTokConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ConfigError(f"unknown TiTok config field(s): {', '.join(bad)}")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
