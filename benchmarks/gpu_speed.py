"""The timed sections of ``gpu_check.py``: generation, encode/decode and stage-1 training speed.

Every variant is timed with the same inputs and batch; a variant that fails (out of memory, a
``torch.compile`` backend missing) is recorded with its error and the others still run. Timings
synchronise the device (:func:`titok.evaluation.throughput.time_call`) and report the median.

* SDPA "fused" is PyTorch's default choice of attention kernel (flash / memory-efficient on a GPU),
  "math" forces the reference kernel (``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``): the
  gain SDPA brings.
* "compiled" runs the models' submodules through ``nn.Module.compile`` (the sampler loop itself
  stays Python); compilation happens in the warm-up calls, which are not timed.
* float32 keeps PyTorch's default TF32 flags (recorded), the paper's figure is float32 on an A100.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import statistics
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from gpu_setup import Check, build_models, smooth_images
from titok.evaluation.throughput import time_call

#: Generation throughput in the paper's ImageNet-256 table (samples/s, one A100, float32):
#: MaskGIT generator with TiTok-L-32 at its published sampling settings.
PAPER_SAMPLES_PER_SECOND = {"titok-l32": 101.6}
#: Leave this much of the budget for what follows a variant.
MARGIN_S = 30.0


#: (the first call: generate or encode; decode of what the first call made, once, when built)
Calls = tuple[Callable[[], Any], Callable[[], Any]]


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@contextlib.contextmanager
def _attention(kind: str) -> Iterator[None]:
    if kind == "math":
        with sdpa_kernel(SDPBackend.MATH):
            yield
    else:
        yield


def _compiled(module: torch.nn.Module, backend: str) -> torch.nn.Module:
    """A copy of ``module`` whose direct submodules run compiled (the original stays eager)."""
    twin = copy.deepcopy(module)
    for child in twin.children():
        child.compile(backend=backend)
    return twin


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _largest_batch(check: Check, batches: tuple[int, ...], make: Callable[[int], Calls]) -> tuple[int, Calls]:
    """The first of ``batches`` (largest first) whose calls run without running out of memory:
    ``make`` runs the first call (its output feeds the second), then the second is run once."""
    last: BaseException | None = None
    for batch in batches:
        try:
            calls = make(batch)
            calls[1]()
            return batch, calls
        except Exception as exc:
            if not _is_oom(exc):
                raise
            last = exc
            _free(check.device)
    raise RuntimeError(f"every batch in {batches} ran out of memory") from last


#: (part, variant, dtype, compiled, attention), run in this order: the eager variants first, so
#: that a spent time budget skips the compiled ones (whose warm-up compiles) rather than those.
JOBS = (
    ("generation", "float32", torch.float32, False, "fused"),
    ("generation", "bfloat16", torch.bfloat16, False, "fused"),
    ("generation", "bfloat16_sdpa_math", torch.bfloat16, False, "math"),
    ("coding", "bfloat16", torch.bfloat16, False, "fused"),
    ("coding", "bfloat16_sdpa_math", torch.bfloat16, False, "math"),
    ("generation", "bfloat16_compiled", torch.bfloat16, True, "fused"),
    ("coding", "bfloat16_compiled", torch.bfloat16, True, "fused"),
    ("generation", "float32_compiled", torch.float32, True, "fused"),
)


def generation_and_coding_speed(check: Check) -> dict[str, Any]:
    """Generation samples/s (tokens, and tokens + decoding), encode and decode images/s.

    Generation: ``generate`` for a class-balanced batch, then ``decode`` of its tokens, timed
    apart; samples/s counts both. Coding: ``encode`` of a batch of images, ``decode`` of their
    tokens. Each part takes the largest of its batches that fits, once, for all its variants.
    """
    sizes, device = check.sizes, check.device
    tokenizer, generator = build_models(sizes)
    tokenizer.to(device)
    generator.to(device)
    num_classes = generator.config.num_classes
    paper = PAPER_SAMPLES_PER_SECOND.get(sizes.tokenizer)
    found: dict[str, Any] = {
        "status": "running",
        "tokenizer": sizes.tokenizer,
        "generator": sizes.generator,
        "sampling": {
            "num_steps": generator.config.num_steps,
            "guidance_scale": generator.config.guidance_scale,
            "guidance_schedule": generator.config.guidance_schedule,
        },
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "paper_samples_per_second": paper,
        "generation": {},
        "coding": {},
    }
    twins: dict[str, torch.nn.Module] = {}

    def models(compiled: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
        if not compiled:
            return generator, tokenizer
        if not twins:
            twins["generator"] = _compiled(generator, check.compile_backend)
            twins["tokenizer"] = _compiled(tokenizer, check.compile_backend)
        return twins["generator"], twins["tokenizer"]

    batches: dict[str, int] = {}
    for part, name, dtype, compiled, attention in JOBS:
        if check.seconds_left() < MARGIN_S:
            found[part][name] = {"status": "skipped", "reason": "time budget spent"}
            continue
        try:
            gen, tok = models(compiled)
            make = (
                _generation_job(gen, tok, dtype, num_classes)
                if part == "generation"
                else _coding_job(tok, dtype)
            )
            with _attention(attention):
                if part not in batches:
                    choices = sizes.generation_batches if part == "generation" else sizes.coding_batches
                    batches[part], (first, decode) = _largest_batch(check, choices, make)
                else:
                    first, decode = make(batches[part])
                first_s = time_call(first, device, sizes.warmup, sizes.runs)
                decode_s = time_call(decode, device, sizes.warmup, sizes.runs)
            found[part][name] = _rates(part, batches[part], first_s, decode_s, paper)
        except Exception as exc:
            found[part][name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:1000]}
        finally:
            _free(device)
        check.results["sections"]["speed"] = found  # a check stopped mid-way keeps what it measured
        check.save()
    statuses = [v["status"] for part in ("generation", "coding") for v in found[part].values()]
    found["status"] = "ok" if all(s == "ok" for s in statuses) else "partial"
    return found


def _generation_job(gen: Any, tok: Any, dtype: torch.dtype, num_classes: int) -> Callable[[int], Calls]:
    """For a batch: (generate, decode of its tokens)."""
    from titok.evaluation.generation import class_balanced_labels

    def make(batch: int) -> Calls:
        labels = class_balanced_labels(batch, num_classes).to(next(gen.parameters()).device)
        generate = lambda: gen.generate(labels, seed=0, dtype=dtype)  # noqa: E731
        tokens = generate()
        decode = lambda: tok.decode(tokens, batch_size=batch, dtype=dtype)  # noqa: E731
        return generate, decode

    return make


def _coding_job(tok: Any, dtype: torch.dtype) -> Callable[[int], Calls]:
    """For a batch: (encode of images, decode of their tokens)."""

    def make(batch: int) -> Calls:
        images = smooth_images(batch, tok.config.image_size, seed=3).to(tok.device)
        encode = lambda: tok.encode(images, batch_size=batch, dtype=dtype)  # noqa: E731
        tokens = encode()
        decode = lambda: tok.decode(tokens, batch_size=batch, dtype=dtype)  # noqa: E731
        return encode, decode

    return make


def _rates(
    part: str, batch: int, first_s: list[float], decode_s: list[float], paper: float | None
) -> dict[str, Any]:
    t_first, t_decode = statistics.median(first_s), statistics.median(decode_s)
    if part == "coding":
        return {
            "status": "ok",
            "batch": batch,
            "encode_seconds": first_s,
            "decode_seconds": decode_s,
            "encode_images_per_second": batch / t_first,
            "decode_images_per_second": batch / t_decode,
        }
    rates = {
        "status": "ok",
        "batch": batch,
        "token_seconds": first_s,
        "decode_seconds": decode_s,
        "tokens_only_samples_per_second": batch / t_first,
        "samples_per_second": batch / (t_first + t_decode),
    }
    if paper:
        rates["ratio_to_paper"] = rates["samples_per_second"] / paper
    return rates


# ------------------------------------------------------------------------------------ training


def write_shard(path: Path, count: int, size: int, seed: int = 0) -> Path:
    """A WebDataset shard of ``count`` smooth random JPEG images (``<key>.cls``, ``<key>.jpg``)."""
    from PIL import Image

    images = smooth_images(count, size, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, image in enumerate(images):
            buffer = io.BytesIO()
            array = (image * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(array).save(buffer, format="JPEG", quality=90)
            for suffix, data in ((".cls", str(i % 10).encode()), (".jpg", buffer.getvalue())):
                info = tarfile.TarInfo(f"{i:06d}{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _teacher_config(tiny: bool) -> Any:
    from titok.models.vqgan import VQGANConfig

    if tiny:
        return VQGANConfig(
            channel_mult=(1, 1, 2), hidden_channels=32, num_res_blocks=1, z_channels=32, codebook_size=256
        )
    return VQGANConfig()  # the published MaskGIT-VQGAN architecture


def training_speed(check: Check) -> dict[str, Any]:
    """Stage-1 training images/s per GPU: one run of the recipe per variant, logging every step;
    the rate is the median of the engine's own ``perf/images_per_second`` over the steps after
    the first few (warm-up: allocator, kernel choice, data workers starting)."""
    from titok.loading.weights import save_model
    from titok.models.vqgan import VQGAN
    from titok.resources import recipes_dir
    from titok.training import load_recipe, make_task, train

    sizes = check.sizes
    work = check.work / "training"
    shutil.rmtree(work, ignore_errors=True)
    tiny = sizes.training_recipe.startswith("tiny")
    torch.manual_seed(0)
    teacher_cfg = _teacher_config(tiny)
    teacher = save_model(VQGAN(teacher_cfg), work / "teacher", kind="vqgan", config=teacher_cfg.to_dict())
    path = recipes_dir() / f"{sizes.training_recipe}.yaml"
    base = load_recipe(path, [f"teacher={teacher}", "data.train=unused"], mode="stage1")
    size = base.data.image_size or base.titok_config().image_size
    batch = base.training.batch_size
    shard = write_shard(work / "data" / "train-0000.tar", max(4 * batch, 16), size)
    workers = min(base.data.num_workers, max((os.cpu_count() or 2) - 2, 0))
    overrides = [
        f"teacher={teacher}",
        f"data.train={shard}",
        f"data.num_workers={workers}",
        "experiment.progress_bar=false",
        "experiment.image_every=0",
        "experiment.save_every=1000000000",
        "experiment.log_every=1",
    ]
    found: dict[str, Any] = {
        "recipe": sizes.training_recipe,
        "batch_per_device": batch,
        "image_size": size,
        "mixed_precision": base.training.mixed_precision,
        "data_workers": workers,
        "compile": "not applicable: the training engine runs the models eagerly",
    }
    short, long = sizes.training_steps
    for attention in ("fused", "math"):
        name = f"sdpa_{attention}"
        if check.seconds_left() < 3 * MARGIN_S:
            found[name] = {"status": "skipped", "reason": "time budget spent"}
            continue
        try:
            recipe = load_recipe(path, [*overrides, f"training.max_train_steps={long}"], mode="stage1")
            start = time.monotonic()
            with _attention(attention):
                train(make_task(recipe), output_dir=work / name)
            seconds = time.monotonic() - start
            logged = [json.loads(line) for line in (work / name / "metrics.jsonl").read_text().splitlines()]
            rates = [r["perf/images_per_second"] for r in logged if r["step"] > short]
            found[name] = {
                "status": "ok",
                "steps": long,
                "warmup_steps": short,
                "run_seconds": seconds,
                "images_per_second_by_step": rates,
                "images_per_second": statistics.median(rates),
            }
        except Exception as exc:
            found[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:1000]}
        finally:
            _free(check.device)
    parts = [found[f"sdpa_{a}"]["status"] for a in ("fused", "math")]
    found["status"] = "ok" if all(s == "ok" for s in parts) else "partial"
    return found
