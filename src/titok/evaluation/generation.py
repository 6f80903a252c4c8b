"""Generation quality: gFID and Inception Score of class-conditional samples, and the ADM sample file.

Command line::

    titok eval generation --model M --generator G --num 50000
        (--ref-stats FILE.npz | --ref-data D [--ref-split all]) [--feature-net NET]
        [--samples-out samples.npz] [--num-steps S] [--guidance-scale W] [--seed 0] [--json-out FILE]

``num`` class labels are spread evenly over the generator's classes (label ``i`` is
``i mod num_classes``, so every class gets ``num // num_classes`` or one more samples, and every
consecutive chunk is balanced too); the generator samples tokens, the tokenizer decodes them, and
the images are rounded to 8 bits exactly as written to the sample file. Reported (keys of the
result dict): ``gFID[<net>]`` against the reference statistics, ``IS[<net>]`` and
``IS_std[<net>]`` (10 splits) when the network has logits, ``num_images``.

The samples are written as the ADM evaluator's input: an ``.npz`` with ``arr_0`` uint8
[N, H, W, 3] (NHWC) and ``arr_1`` int64 [N] labels, streamed to disk batch by batch (memory stays
at one batch even for 50k images) and renamed into place only when complete.
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from titok.errors import ConfigError, TitokError
from titok.evaluation.reconstruction import check_pixel_model, decode_to_images
from titok.metrics import FeatureAccumulator, GaussianStats, generation_metrics, metric_key
from titok.models.titok import TiTok
from titok.models.vqgan import VQGAN


def class_balanced_labels(num: int, num_classes: int) -> torch.Tensor:
    """Labels [num] cycling through ``0 .. num_classes - 1`` (every class within one of num / num_classes)."""
    if num < 1 or num_classes < 1:
        raise ConfigError(f"need num >= 1 and num_classes >= 1, got {num} and {num_classes}")
    return torch.arange(num) % num_classes


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """Images (B, 3, H, W) in [0, 1] -> uint8 array [B, H, W, 3] (rounded to nearest)."""
    return (
        images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )


class AdmSampleWriter:
    """Write ``num`` images into an ADM-evaluator ``.npz`` incrementally.

    Use as a context manager; :meth:`add` takes uint8 batches [B, H, W, 3]. The file is first
    written beside ``path`` and renamed on a successful, complete close; an exception (or fewer
    images than announced) leaves no file at ``path``.

    Args:
        path: output ``.npz`` file.
        num: number of images that will be added.
        height, width: image size.
    """

    def __init__(self, path: str | os.PathLike[str], num: int, height: int, width: int) -> None:
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise ConfigError(f"{self.path}: the ADM sample file must end with .npz")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.shape = (num, height, width, 3)
        self.written = 0
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._zip = zipfile.ZipFile(self._partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._stream = self._zip.open("arr_0.npy", "w", force_zip64=True)
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(self._stream, header)

    def add(self, images: np.ndarray) -> None:
        """Append a batch, uint8 [B, H, W, 3]."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != self.shape[1:]:
            raise ValueError(
                f"expected uint8 images [B, {', '.join(map(str, self.shape[1:]))}], "
                f"got {images.dtype} {list(images.shape)}"
            )
        if self.written + len(images) > self.shape[0]:
            raise ValueError(f"more than the announced {self.shape[0]} images")
        self._stream.write(np.ascontiguousarray(images).tobytes())
        self.written += len(images)

    def close(self, labels: np.ndarray | None = None) -> Path:
        """Finish the file (``labels`` [N] become ``arr_1``) and move it into place."""
        self._stream.close()
        try:
            if self.written != self.shape[0]:
                raise ValueError(f"{self.written} images written, {self.shape[0]} announced")
            if labels is not None:
                with self._zip.open("arr_1.npy", "w", force_zip64=True) as stream:
                    np.lib.format.write_array(stream, np.asarray(labels, dtype=np.int64), allow_pickle=False)
            self._zip.close()
        except BaseException:
            self.abort()
            raise
        self._partial.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        self._stream.close()
        self._zip.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> AdmSampleWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None:
            self.abort()


def check_compatible(tokenizer: TiTok, generator: torch.nn.Module) -> None:
    """Refuse a generator whose codebook size or sequence length differ from the tokenizer's."""
    if tokenizer.is_vae:
        raise TitokError("the generator samples discrete codes; this tokenizer is a VAE (continuous tokens)")
    config = generator.config
    if config.codebook_size != tokenizer.config.codebook_size or config.seq_len != tokenizer.num_tokens:
        raise TitokError(
            f"generator and tokenizer do not match: generator has {config.seq_len} tokens over "
            f"{config.codebook_size} codes, tokenizer {tokenizer.num_tokens} tokens over "
            f"{tokenizer.config.codebook_size} codes"
        )


def generate_images(
    tokenizer: TiTok,
    generator: torch.nn.Module,
    labels: torch.Tensor,
    *,
    batch_size: int = 32,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    teacher: VQGAN | None = None,
    sampling: dict[str, Any] | None = None,
    progress: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(labels [B], images (B, 3, H, W) in [0, 1])`` batch by batch.

    Args:
        tokenizer: decodes the sampled tokens (a stage-1 model through ``teacher``).
        generator: a :class:`titok.models.generator.Generator` (its ``generate`` gives tokens [B, K]).
        labels: class ids [N].
        batch_size: samples per generator call.
        seed: seed of one random generator used for all batches (same seed and batch size, same images).
        dtype: ``dtype=`` of the generator's ``generate`` and the tokenizer's ``decode``.
        sampling: extra keyword arguments of ``generate`` (``num_steps``, ``guidance_scale``, ...).
        progress: show a progress bar.
    """
    check_compatible(tokenizer, generator)
    check_pixel_model(tokenizer, teacher)
    device = next(generator.parameters()).device
    rng = torch.Generator(device=device).manual_seed(seed)
    with tqdm(
        total=len(labels), desc="generation", unit="img", disable=None if progress else True, file=sys.stderr
    ) as bar:
        for chunk in labels.split(batch_size):
            tokens = generator.generate(chunk.to(device), generator=rng, dtype=dtype, **(sampling or {}))
            images = decode_to_images(tokenizer, tokens.to(tokenizer.device), dtype, teacher)
            bar.update(len(chunk))
            yield chunk, images


def evaluate_generation(
    tokenizer: TiTok,
    generator: torch.nn.Module,
    num: int,
    feature_network: torch.nn.Module,
    reference: GaussianStats | None,
    *,
    num_classes: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    teacher: VQGAN | None = None,
    sampling: dict[str, Any] | None = None,
    samples_out: str | os.PathLike[str] | None = None,
    is_splits: int = 10,
    fid_method: Literal["sqrtm", "eigh"] = "sqrtm",
    progress: bool = True,
) -> dict[str, float]:
    """gFID and IS of ``num`` class-balanced samples (keys in the module docstring).

    Args:
        tokenizer, generator: the models (see :func:`generate_images`).
        num: number of samples (at least 2).
        feature_network: network of FID/IS (float32).
        reference: statistics of real images from ``feature_network``; None reports IS only.
        num_classes: classes the labels cycle through (default: the generator's).
        samples_out: write the ADM ``.npz`` there (None: no file).
        is_splits: IS splits (at most one per sample).
        fid_method: see :func:`titok.metrics.frechet_distance`.

    Raises:
        TitokError: incompatible models, or reference statistics of another feature network.
    """
    if num < 2:
        raise ConfigError(f"gFID needs at least 2 samples, got num={num}")
    if reference is not None and reference.feature_network != feature_network.name:
        raise TitokError(
            f"reference statistics are of feature network {reference.feature_network!r}, "
            f"the metrics use {feature_network.name!r}"
        )
    labels = class_balanced_labels(num, num_classes or generator.config.num_classes)
    accumulator = FeatureAccumulator(feature_network, keep_probs=True)
    size = tokenizer.config.image_size
    writer = AdmSampleWriter(samples_out, num, size, size) if samples_out is not None else None
    try:
        for _, images in generate_images(
            tokenizer,
            generator,
            labels,
            batch_size=batch_size,
            seed=seed,
            dtype=dtype,
            teacher=teacher,
            sampling=sampling,
            progress=progress,
        ):
            pixels = to_uint8_nhwc(images)
            if writer is not None:
                writer.add(pixels)
            accumulator.update(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close(labels.numpy())
    raw = generation_metrics(accumulator.compute(), reference, is_splits=is_splits, fid_method=fid_method)
    name = feature_network.name
    results: dict[str, float] = {"num_images": float(num)}
    if reference is not None:
        results[metric_key("gFID", name)] = raw[metric_key("FID", name)]
    for key in ("IS", "IS_std"):
        if metric_key(key, name) in raw:
            results[metric_key(key, name)] = raw[metric_key(key, name)]
    return results


__all__ = [
    "AdmSampleWriter",
    "check_compatible",
    "class_balanced_labels",
    "evaluate_generation",
    "generate_images",
    "to_uint8_nhwc",
]
