"""What the GPU check's parts share: its sizes, its state, the models and inputs it measures."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from common import write_results

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    """What a check runs: the published sizes on a GPU, the smallest ones with ``--tiny``."""

    tokenizer: str
    generator: str
    agreement_batch: int
    generation_batches: tuple[int, ...]
    coding_batches: tuple[int, ...]
    training_recipe: str
    training_steps: tuple[int, int]  # (warm-up steps not counted, steps of the run)
    warmup: int
    runs: int
    tests_timeout_s: int
    num_steps: int | None = None  # sampling steps (None: the generator's published setting)


FULL = Sizes(
    "titok-l32", "titok-l32", 4, (512, 256, 128, 64), (256, 128, 64), "titok_l32_stage1", (5, 25), 1, 3, 240
)
TINY = Sizes("titok-tiny-32", "tiny", 2, (4, 2), (4, 2), "tiny_stage1", (1, 3), 0, 1, 240, num_steps=2)


@dataclass
class Check:
    """One run of the check: where it runs, its sizes, its deadline and what it found so far."""

    device: torch.device
    sizes: Sizes
    deadline: float
    out: Path
    work: Path  # scratch folder (training runs, the synthetic shard)
    compile_backend: str = "inductor"
    results: dict[str, Any] = field(default_factory=dict)

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        write_results("gpu_check", self.results, self.out)


def device_name(device: torch.device) -> str:
    """The device's name as a file-name part: ``nvidia_h200``, ``cpu``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = device.type
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def device_facts(device: torch.device) -> dict[str, Any]:
    facts: dict[str, Any] = {"device": str(device), "name": device_name(device), "torch": torch.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts |= {
            "cuda": torch.version.cuda,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    return facts


def smooth_images(batch: int, size: int, seed: int) -> torch.Tensor:
    """Random low-frequency images (B, 3, size, size) in [0, 1]: image-like, unlike pixel noise."""
    rng = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(size // 8, 2), max(size // 8, 2), generator=rng)
    return torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bicubic", align_corners=False
    ).clamp(0, 1)


def build_models(sizes: Sizes, seed: int = 0) -> tuple[Any, Any]:
    """Random tokenizer and generator weights (the generator sized for the tokenizer's tokens)."""
    from titok import Generator, TiTok

    torch.manual_seed(seed)
    tokenizer = TiTok.from_preset(sizes.tokenizer).eval()
    cfg = tokenizer.config
    steps = {"num_steps": sizes.num_steps} if sizes.num_steps else {}
    generator = Generator.from_preset(
        sizes.generator, codebook_size=cfg.codebook_size, seq_len=cfg.num_latent_tokens, **steps
    ).eval()
    return tokenizer, generator
