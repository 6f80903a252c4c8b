"""What the web demo does, as plain functions: reconstruct, edit tokens, generate step by step.

They take the shared models (:class:`titok.web.models.SharedModels`) and plain values (file
paths, lists of token ids, numbers), return PIL images and lists, and raise
:class:`titok.errors.TitokError` with a message for the page when an input is wrong. Gradio is
not needed here.
"""

from __future__ import annotations

import html
import math
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from titok.class_names import resolve_class
from titok.errors import TitokError
from titok.images import image_errors, pil_to_tensor, resize_center_crop, tensor_to_pil, to_rgb
from titok.metrics.image_quality import psnr
from titok.models.titok import TiTok
from titok.precision import precision
from titok.web.models import SharedModels

#: An upload whose longer side exceeds this is shrunk to it first (with a note on the page).
MAX_SIDE = 2048
#: Samples per generation request, at most.
MAX_SAMPLES = 16
#: Decoding steps per generation request, at most.
MAX_STEPS = 64
#: The precisions offered on the page.
PRECISIONS: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def precision_dtype(name: str) -> torch.dtype:
    try:
        return PRECISIONS[name]
    except KeyError:
        raise TitokError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}") from None


def whole_number(value: float | int | None, what: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` (page inputs arrive as floats or None)."""
    if value is None or isinstance(value, bool) or not math.isfinite(value) or value != int(value):
        raise TitokError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    if not low <= int(value) <= high:
        raise TitokError(f"{what} must be from {low} to {high}, got {int(value)}")
    return int(value)


# -- images -----------------------------------------------------------------------------------------


def load_image(path: str | Path) -> tuple[Image.Image, list[str]]:
    """Read an uploaded file as an RGB image; returns it with notes for the page.

    An image whose longer side exceeds :data:`MAX_SIDE` is shrunk to it (JPEGs are decoded at a
    reduced scale directly); one too large for Pillow to open safely is refused. Raises
    :class:`titok.errors.ImageError` for a file that is not a readable image.
    """
    name = Path(path).name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the larger "bombs" are refused
        with image_errors(name), Image.open(path) as img:
            original = img.size
            if max(original) > MAX_SIDE:
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decoded at a reduced scale
            img.load()
            rgb = to_rgb(img)
    notes = []
    if max(original) > MAX_SIDE:
        rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
        notes.append(
            f"{name} is large ({original[0]}×{original[1]}): resized to {rgb.width}×{rgb.height} first"
        )
    return rgb, notes


def enlarge(img: Image.Image, at_least: int = 256) -> Image.Image:
    """``img`` scaled up by a whole factor (nearest pixel) to at least ``at_least`` pixels wide."""
    factor = max(1, -(-at_least // img.width))
    return (
        img
        if factor == 1
        else img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    )


def image_psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR in dB between two RGB images of the same size."""
    return float(psnr(pil_to_tensor(a)[None], pil_to_tensor(b)[None])[0])


# -- reconstruct and decode ------------------------------------------------------------------------


@dataclass(frozen=True)
class Reconstruction:
    """One image through the tokenizer.

    Attributes:
        input: what the model sees (resized and centre-cropped to its image size).
        tokens: the K code ids.
        image: their decoding.
        psnr: of ``image`` against ``input``, in dB.
        seconds: time of encoding and decoding.
        notes: remarks for the page (a large upload resized, the crop).
    """

    input: Image.Image
    tokens: list[int]
    image: Image.Image
    psnr: float
    seconds: float
    notes: list[str]


def reconstruct(
    models: SharedModels, path: str | Path, precision_name: str = "float32", num_tokens: float | None = None
) -> Reconstruction:
    """Tokenize the image file at ``path`` and decode its tokens (the first ``num_tokens`` of them,
    for a tokenizer trained on prefixes; None: all)."""
    dtype = precision_dtype(precision_name)
    image, notes = load_image(path)
    model = models.tokenizer().model
    size = model.image_size
    if image.size != (size, size):
        notes.append(f"the model sees a {size}×{size} centre crop of the {image.width}×{image.height} image")
    k = prefix_length(model, num_tokens)
    model_input = resize_center_crop(image, size)
    batch = pil_to_tensor(model_input)[None]
    with models.computing():
        start = time.perf_counter()
        tokens = model.encode(batch, dtype=dtype)
        decoded = model.decode(tokens[:, :k], dtype=dtype).cpu()
        seconds = time.perf_counter() - start
    return Reconstruction(
        input=model_input,
        tokens=tokens[0].tolist(),
        image=tensor_to_pil(decoded[0]),
        psnr=float(psnr(decoded, batch)[0]),
        seconds=seconds,
        notes=notes,
    )


def prefix_length(model: TiTok, num_tokens: float | None) -> int:
    """The number of tokens to decode: all K for None, else a whole number in [1, K] that the
    model allows (:meth:`TiTok.check_prefix`)."""
    if num_tokens is None:
        return model.num_tokens
    return model.check_prefix(whole_number(num_tokens, "tokens decoded", 1, model.num_tokens))


def decode(
    models: SharedModels,
    tokens: Sequence[int],
    precision_name: str = "float32",
    num_tokens: float | None = None,
) -> Image.Image:
    """Decode one sequence of code ids (its first ``num_tokens``; None: all) to an image."""
    dtype = precision_dtype(precision_name)
    model = models.tokenizer().model
    check_tokens(tokens, model.num_tokens, model.codebook_size)
    k = prefix_length(model, num_tokens)
    with models.computing():
        decoded = model.decode(torch.tensor([list(tokens)[:k]], dtype=torch.long), dtype=dtype)
    return tensor_to_pil(decoded[0].cpu())


def decode_partial(model: TiTok, ids: torch.Tensor, mask_id: int, dtype: torch.dtype | None) -> torch.Tensor:
    """Decode sequences [B, K] in which some positions hold ``mask_id`` (not yet generated).

    A masked position is decoded as the mean of the codebook's vectors: the decoder sees what it
    knows and an average code for the rest. Returns images (B, 3, H, W) in [0, 1].
    """
    masked = ids == mask_id
    with torch.inference_mode():
        latents = model.tokens_to_latents(ids.masked_fill(masked, 0).to(model.device))
        mean = model.tokens_to_latents(torch.arange(model.codebook_size, device=model.device)[None]).mean(
            dim=1
        )
        latents = torch.where(masked.to(model.device)[..., None], mean.to(latents.dtype), latents)
        with precision(model.device.type, dtype):
            return model.decode_latents(latents).float().clamp(0.0, 1.0).cpu()


# -- editing tokens ---------------------------------------------------------------------------------


def check_tokens(tokens: Sequence[int], num_tokens: int, codebook_size: int) -> None:
    if len(tokens) != num_tokens:
        raise TitokError(f"expected {num_tokens} tokens, got {len(tokens)}: reconstruct an image first")
    bad = [t for t in tokens if not 0 <= t < codebook_size]
    if bad:
        raise TitokError(f"token ids must lie in [0, {codebook_size}), got {bad[0]}")


def replace_token(tokens: Sequence[int], position: float, code: float, codebook_size: int) -> list[int]:
    """``tokens`` with the one at ``position`` replaced by ``code`` (both checked)."""
    if not tokens:
        raise TitokError("no tokens yet: reconstruct an image first")
    edited = list(tokens)
    edited[whole_number(position, "position", 0, len(edited) - 1)] = whole_number(
        code, "token id", 0, codebook_size - 1
    )
    return edited


def first_from_a(a: Sequence[int], b: Sequence[int], n: float) -> list[int]:
    """The first ``n`` tokens of ``a`` followed by the rest of ``b``."""
    if len(a) != len(b):
        raise TitokError(f"the two images have different token counts ({len(a)} and {len(b)})")
    count = whole_number(n, "n", 0, len(a))
    return list(a[:count]) + list(b[count:])


def swap_positions(
    a: Sequence[int], b: Sequence[int], positions: Sequence[int]
) -> tuple[list[int], list[int]]:
    """``a`` and ``b`` with their tokens at ``positions`` exchanged."""
    if len(a) != len(b):
        raise TitokError(f"the two images have different token counts ({len(a)} and {len(b)})")
    new_a, new_b = list(a), list(b)
    for p in positions:
        new_a[p], new_b[p] = b[p], a[p]
    return new_a, new_b


def parse_positions(text: str, num_tokens: int) -> list[int]:
    """Positions written as ``"0-7, 12, 30-31"`` (0-based, ranges inclusive), sorted, without repeats."""
    found: set[int] = set()
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise TitokError(f"positions: cannot read {part!r} (write them as 0-7, 12, 30-31)")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if low > high or high >= num_tokens:
            raise TitokError(f"positions: {part!r} is not a range within 0-{num_tokens - 1}")
        found.update(range(low, high + 1))
    if not found:
        raise TitokError("positions: none given (write them as 0-7, 12, 30-31)")
    return sorted(found)


def token_grid_html(
    tokens: Sequence[int], changed: Sequence[int] = (), mask_id: int | None = None, title: str = ""
) -> str:
    """The token ids as a compact table, position in small print; ``changed`` positions are marked."""
    columns = 8 if len(tokens) <= 64 else 16
    marked = set(changed)
    rows = []
    for start in range(0, len(tokens), columns):
        cells = []
        for pos in range(start, min(start + columns, len(tokens))):
            token = tokens[pos]
            is_mask = mask_id is not None and token == mask_id
            classes = " ".join(c for c, on in (("changed", pos in marked), ("masked", is_mask)) if on)
            text = "·" if is_mask else str(token)
            cells.append(
                f'<td data-pos="{pos}" data-token="{token}" class="{classes}" title="position {pos}">'
                f'<span class="pos">{pos}</span>{text}</td>'
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<caption>{html.escape(title)}</caption>" if title else ""
    return f'<table class="titok-grid">{caption}{"".join(rows)}</table>'


# -- generation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """Samples of one class, with every decoding step of every sample.

    Attributes:
        class_name: the class sampled.
        samples: the decoded samples.
        steps: ``steps[t][i]`` the ids of sample ``i`` after step ``t``; ``mask_id`` where masked.
        mask_id: the generator's mask token.
        seconds: time of sampling and decoding.
    """

    class_name: str
    samples: list[Image.Image]
    steps: list[list[list[int]]]
    mask_id: int
    seconds: float


def generate(
    models: SharedModels,
    class_text: str,
    num_samples: int = 4,
    num_steps: float | None = None,
    guidance_scale: float | None = None,
    guidance_schedule: str | None = None,
    temperature: float | None = None,
    seed: int = 0,
    precision_name: str = "float32",
    num_tokens: float | None = None,
) -> Generation:
    """Sample ``num_samples`` images of a class (name or id), recording every decoding step; with
    ``num_tokens``, only the first k tokens (a tokenizer trained on prefixes). Sampling settings
    left at None are the generator's own defaults (its config)."""
    dtype = precision_dtype(precision_name)
    n = whole_number(num_samples, "samples", 1, MAX_SAMPLES)
    steps = None if num_steps is None else whole_number(num_steps, "steps", 1, MAX_STEPS)
    seed = whole_number(seed, "seed", 0, 2**63 - 1)
    tokenizer, generator = models.generation_pair()
    if not str(class_text or "").strip():
        raise TitokError("pick a class")
    label = resolve_class(str(class_text), generator.class_names)
    k = prefix_length(tokenizer.model, num_tokens)
    recorded: list[torch.Tensor] = []
    with models.computing():
        start = time.perf_counter()
        tokens = generator.model.generate(
            [label] * n,
            num_steps=steps,
            guidance_scale=guidance_scale,
            guidance_schedule=guidance_schedule,
            randomize_temperature=temperature,
            seed=seed,
            on_step=lambda _step, ids: recorded.append(ids[:, :k].cpu().clone()),
            dtype=dtype,
            num_tokens=k,
        )
        images = tokenizer.model.decode(tokens, dtype=dtype).cpu()
        seconds = time.perf_counter() - start
    return Generation(
        class_name=generator.class_names[label],
        samples=[tensor_to_pil(img) for img in images],
        steps=[ids.tolist() for ids in recorded],
        mask_id=generator.model.mask_token_id,
        seconds=seconds,
    )


def decode_steps(
    models: SharedModels,
    steps: Sequence[Sequence[Sequence[int]]],
    mask_id: int,
    sample: int,
    precision_name: str,
) -> list[tuple[Image.Image, str]]:
    """Sample ``sample``'s sequence from all-masked through each step, decoded, with captions."""
    dtype = precision_dtype(precision_name)
    if not steps:
        raise TitokError("generate first")
    sample = whole_number(sample, "sample", 0, len(steps[0]) - 1)
    model = models.tokenizer().model
    ids = torch.tensor(
        [[mask_id] * len(steps[0][sample])] + [list(s[sample]) for s in steps], dtype=torch.long
    )
    with models.computing():
        images = decode_partial(model, ids, mask_id, dtype)
    total = ids.shape[1]
    return [
        (tensor_to_pil(img), f"{t}/{len(steps)}: {int((row != mask_id).sum())}/{total}")
        for t, (img, row) in enumerate(zip(images, ids, strict=True))
    ]


__all__ = [
    "MAX_SAMPLES",
    "MAX_SIDE",
    "MAX_STEPS",
    "PRECISIONS",
    "Generation",
    "Reconstruction",
    "check_tokens",
    "decode",
    "decode_partial",
    "decode_steps",
    "enlarge",
    "first_from_a",
    "generate",
    "image_psnr",
    "load_image",
    "parse_positions",
    "precision_dtype",
    "reconstruct",
    "replace_token",
    "swap_positions",
    "token_grid_html",
    "whole_number",
]
