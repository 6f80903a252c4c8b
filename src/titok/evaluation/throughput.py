"""Throughput of a tokenizer (and generator): images per second on the current device and dtype.

Command line::

    titok bench --model M [--generator G] [--batch-size 16] [--warmup 2] [--runs 5]
        [--device cuda] [--dtype bfloat16] [--num-steps S] [--json-out FILE]

Each operation is run on one batch of ``batch_size`` random inputs ``warmup`` times untimed,
then ``runs`` times timed (with device synchronisation on CUDA); the reported rate is
``batch_size / median time``. Operations:

* ``encode``: images -> token ids (or VAE latents);
* ``decode``: tokens -> images (a stage-1 model through its teacher VQGAN);
* ``generate``: class labels -> tokens -> images, the whole sampling loop plus decoding (only
  with a generator).

The content of the inputs does not change the amount of work, so random images and tokens are used.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from titok.errors import ConfigError
from titok.evaluation.generation import check_compatible, class_balanced_labels
from titok.evaluation.reconstruction import check_pixel_model, decode_to_images
from titok.models.titok import TiTok
from titok.models.vqgan import VQGAN


@dataclass
class Timing:
    """Timings of one operation.

    Attributes:
        batch_size: images per call.
        seconds: duration of every timed run.
    """

    batch_size: int
    seconds: list[float] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_second(self) -> float:
        return self.batch_size / self.median_seconds


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int = 2, runs: int = 5) -> list[float]:
    """Run ``fn`` ``warmup`` times, then time ``runs`` calls; returns the durations in seconds."""
    if warmup < 0 or runs < 1:
        raise ConfigError(f"need warmup >= 0 and runs >= 1, got {warmup} and {runs}")
    for _ in range(warmup):
        fn()
    _synchronize(device)
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        durations.append(time.perf_counter() - start)
    return durations


def benchmark(
    model: TiTok,
    generator: torch.nn.Module | None = None,
    *,
    batch_size: int = 16,
    dtype: torch.dtype | None = None,
    warmup: int = 2,
    runs: int = 5,
    teacher: VQGAN | None = None,
    sampling: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Timing]:
    """Time encode, decode (and generate) of ``model`` on its device.

    Args:
        model: the tokenizer (eval mode, on the device to measure).
        generator: a class-conditional generator matching ``model`` (None: no ``generate``).
        batch_size: images per call.
        dtype: autocast dtype (None or float32: full precision).
        warmup, runs: untimed and timed calls per operation.
        teacher: VQGAN decoding a stage-1 model's proxy codes.
        sampling: keyword arguments of ``generator.generate`` (``num_steps``, ...).
        seed: seed of the random inputs.

    Returns:
        ``{"encode": Timing, "decode": Timing, "generate": Timing}`` (generate only with a generator).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    check_pixel_model(model, teacher)
    model.eval()
    device = model.device
    rng = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    images = torch.rand(batch_size, 3, size, size, generator=rng).to(device)
    tokens = model.encode(images, batch_size=batch_size, dtype=dtype)

    def encode() -> None:
        model.encode(images, batch_size=batch_size, dtype=dtype)

    def decode() -> None:
        decode_to_images(model, tokens, dtype, teacher)

    results = {
        "encode": Timing(batch_size, time_call(encode, device, warmup, runs)),
        "decode": Timing(batch_size, time_call(decode, device, warmup, runs)),
    }
    if generator is not None:
        check_compatible(model, generator)
        generator.eval()
        gen_device = next(generator.parameters()).device
        labels = class_balanced_labels(batch_size, generator.config.num_classes).to(gen_device)

        def generate() -> None:
            sampled = generator.generate(labels, seed=seed, dtype=dtype, **(sampling or {}))
            decode_to_images(model, sampled.to(device), dtype, teacher)

        results["generate"] = Timing(batch_size, time_call(generate, device, warmup, runs))
    return results


__all__ = ["Timing", "benchmark", "time_call"]
