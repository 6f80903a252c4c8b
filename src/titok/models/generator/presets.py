"""Named generator presets: the authors' published MaskGIT generators and CPU-sized ones."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from titok.errors import ConfigError
from titok.models.generator.config import GeneratorConfig

#: Hub repo holding the authors' raw state-dict files.
RAW_REPO = "fun-research/TiTok"


@dataclass(frozen=True)
class GeneratorPreset:
    """A named generator architecture, and for published ones where the weights live.

    Attributes:
        name: preset name (``titok-l32``).
        description: one line for listings.
        config: the architecture and sampling defaults.
        hub_repo: hub repo with the authors' ``config.json`` + ``model.safetensors``.
        raw_file: the authors' raw state-dict file in :data:`RAW_REPO`, if any.
    """

    name: str
    description: str
    config: GeneratorConfig
    hub_repo: str | None = None
    raw_file: str | None = None


def _published(k: int, **kw: Any) -> GeneratorConfig:
    return GeneratorConfig(seq_len=k, **kw)


GENERATOR_PRESETS: dict[str, GeneratorPreset] = {
    p.name: p
    for p in (
        GeneratorPreset(
            "titok-l32",
            "published MaskGIT generator for TiTok-L-32 (BERT 768x24, 177M)",
            _published(
                32, num_steps=8, guidance_scale=4.5, guidance_schedule="linear", randomize_temperature=9.5
            ),
            hub_repo="yucornetto/generator_titok_l32_imagenet",
            raw_file="generator_titok_l32.bin",
        ),
        GeneratorPreset(
            "titok-b64",
            "published MaskGIT generator for TiTok-B-64 (BERT 768x24, 177M)",
            _published(
                64, num_steps=8, guidance_scale=3.0, guidance_schedule="linear", randomize_temperature=11.0
            ),
            hub_repo="yucornetto/generator_titok_b64_imagenet",
            raw_file="generator_titok_b64.bin",
        ),
        GeneratorPreset(
            "titok-s128",
            "published MaskGIT generator for TiTok-S-128 (U-ViT 1024x20, 295M)",
            _published(
                128,
                arch="uvit",
                hidden_size=1024,
                depth=20,
                heads=16,
                intermediate_size=4096,
                dropout=0.0,
                attn_dropout=0.0,
                num_steps=64,
                guidance_scale=6.9,
                guidance_schedule="power-cosine",
                guidance_power=3.0,
                randomize_temperature=2.8,
            ),
            hub_repo="yucornetto/generator_titok_s128_imagenet",
        ),
        GeneratorPreset(
            "tiny",
            "CPU-sized BERT generator (128 wide, 2 layers) for tests and small experiments",
            GeneratorConfig(
                hidden_size=128,
                depth=2,
                heads=4,
                intermediate_size=512,
                guidance_scale=3.0,
                randomize_temperature=4.5,
            ),
        ),
        GeneratorPreset(
            "tiny-uvit",
            "CPU-sized U-ViT generator (128 wide, 3 blocks) for tests and small experiments",
            GeneratorConfig(
                arch="uvit",
                hidden_size=128,
                depth=2,
                heads=4,
                intermediate_size=512,
                dropout=0.0,
                attn_dropout=0.0,
                guidance_scale=3.0,
                randomize_temperature=4.5,
            ),
        ),
        GeneratorPreset(
            "small",
            "CPU-sized BERT generator (256 wide, 4 layers) for small-scale training",
            GeneratorConfig(
                hidden_size=256,
                depth=4,
                heads=4,
                intermediate_size=1024,
                guidance_scale=3.0,
                randomize_temperature=4.5,
            ),
        ),
    )
}


def normalize_preset_name(name: str) -> str:
    """The preset key of ``name``: lower case, ``-`` for ``_``, no ``generator-`` prefix."""
    key = name.strip().lower().replace("_", "-")
    return key.removeprefix("generator-")


def generator_presets() -> list[str]:
    """Names of all generator presets."""
    return list(GENERATOR_PRESETS)


def get_generator_preset(name: str) -> GeneratorPreset:
    """The preset called ``name`` (case and ``_``/``-`` insensitive); ConfigError lists close names."""
    key = normalize_preset_name(name)
    if key in GENERATOR_PRESETS:
        return GENERATOR_PRESETS[key]
    close = difflib.get_close_matches(key, GENERATOR_PRESETS, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown generator preset {name!r} (presets: {', '.join(GENERATOR_PRESETS)}).{hint}")
