"""Speed of class-conditional image generation on the CPU: MaskGIT tokens, then tokenizer decoding.

Three published sizes, random weights (speed does not depend on their values), each with its
published sampling settings:

* ``l32``: BERT 768x24 generator (32 tokens, 8 steps, linear guidance 4.5) + TiTok-L-32 decoder;
* ``b64``: BERT 768x24 generator (64 tokens, 8 steps, linear guidance 3.0) + TiTok-B-64 decoder;
* ``s128``: U-ViT 1024x20 generator (128 tokens, 64 steps, power-cosine guidance 6.9) + TiTok-S-128;
* ``tiny``: the ``tiny`` generator over ``titok-tiny-32``'s 16 tokens (a smoke test of the script).

For each size the models are built once; each dtype (float32, bfloat16: ``generate(dtype=...)``
and ``decode(dtype=...)``) gets a small warm-up (a 1-step generation and a decode of 2 images;
in bfloat16 it also makes the generator's bfloat16 weight copies, which ``generate`` keeps for
later calls: the timed calls do not cast the weights), then ``--runs`` rounds time ``Generator.generate`` for ``--batch`` labels and ``TiTok.decode`` of
the tokens, every dtype once per round (interleaved, so that a load change hits them alike); the
median is reported as s/image and images/s, for tokens only and for images (tokens + decode).
Also: approximate achieved GFLOP/s of the token part, and the load average (the machine may be
shared: a high load slows every number).

``--authors`` also times, in the same rounds and on the same weights, the TiTok authors' float32
sampler (their ``ImageBert.generate`` loop, written out in :func:`authors_generate`: logits at
every position, the conditional and unconditional passes one after the other, Gumbel noise over
all logits), tokens only, and reports each dtype's token speed-up over it
(``tokens_speedup_over_authors_float32``).

Usage: ``python benchmarks/bench_generation.py [--sizes l32 b64 s128] [--dtypes float32 bfloat16]
[--authors] [--batch 8] [--runs 1] [--threads 2] [--steps N] [--out PATH]``; writes
``benchmarks/results/generation.json`` (or ``--out``) after every size (a stopped run keeps the
sizes done). ``--steps`` overrides the published number of steps (for a quick check).

``--ceiling`` instead measures what this CPU does in float32 matrix products (a square 2048
product and the generator's own MLP product for a guided L-32 batch of 8) and the rate a given
s/image target (``--target``, default 0.3) would need for L-32 tokens; it adds them to the
results file under ``ceiling`` and runs no generation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results  # noqa: E402
from titok import Generator, TiTok  # noqa: E402
from titok.models.generator import GeneratorConfig  # noqa: E402
from titok.models.grid_tokenizer import GridTokenizer  # noqa: E402
from titok.models.vqgan import VQGAN  # noqa: E402
from titok.sampling import SamplingSettings, guidance_scale_at, gumbel_noise, tokens_to_remask  # noqa: E402

SIZES = {
    "l32": "titok-l32",
    "b64": "titok-b64",
    "s128": "titok-s128",
    "2d256": "titok-l32",
    "tiny": "titok-tiny-32",
}
#: "2d256": the L-32 generator and sampling settings over a 256-token sequence of 1024 codes,
#: decoded by the MaskGIT-VQGAN (16 x 16 codes): the 2D case the paper compares with.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def pass_flops(model: Generator, sequences: int, masked: int) -> float:
    """Approximate FLOPs of one pass: 2 per weight per token in the blocks, attention, code head."""
    c = model.config
    length = c.seq_len + 1
    head = c.hidden_size * c.codebook_size
    embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    block_weights = sum(p.numel() for p in model.parameters() if p.ndim == 2) - head - embeddings
    attention = 4 * length * length * c.hidden_size * c.depth
    return sequences * (2 * block_weights * length + attention) + masked * 2 * head


def generation_flops(model: Generator, batch: int) -> float:
    """FLOPs of one ``generate`` call with the config's sampling settings (guided steps run 2 passes)."""
    c: GeneratorConfig = model.config
    masked, total = c.seq_len, 0.0
    for step in range(c.num_steps):
        scale = guidance_scale_at(step, c.num_steps, c.guidance_scale, c.guidance_schedule, c.guidance_power)
        passes = 2 if scale != 0 and not (c.guidance_schedule == "power-cosine" and scale == 1.0) else 1
        total += pass_flops(model, passes * batch, passes * batch * masked)
        masked = max(1, min(masked - 1, tokens_to_remask(step, c.num_steps, c.seq_len)))
    return total


def build_models(size: str) -> tuple[Generator, torch.nn.Module]:
    """The random-weight generator and tokenizer of ``size`` (always the same weights)."""
    torch.manual_seed(0)
    if size == "2d256":
        return (
            Generator.from_preset(SIZES[size], seq_len=256, codebook_size=1024).eval(),
            GridTokenizer(VQGAN(), 256).eval(),
        )
    tokenizer = TiTok.from_preset(SIZES[size]).eval()
    if size == "tiny":
        generator = Generator.from_preset(
            "tiny", seq_len=tokenizer.num_tokens, codebook_size=tokenizer.codebook_size
        ).eval()
        return generator, tokenizer
    return Generator.from_preset(SIZES[size]).eval(), tokenizer


def authors_generate(
    model: Generator, labels: torch.Tensor, settings: SamplingSettings, generator: torch.Generator
) -> torch.Tensor:
    """The TiTok authors' sampling loop (``ImageBert.generate``), float32, on ``model``'s weights.

    What makes it slower than ours: the model's logits at every position (not only the masked
    ones), the conditional and unconditional passes run one after the other, Gumbel noise drawn
    over all those logits, and both passes wherever the scale is nonzero (power-cosine's first
    step, scale 1, included).
    """
    c = model.config
    ids = torch.full((len(labels), c.seq_len), c.mask_token_id, dtype=torch.long)
    steps, temperature = settings.num_steps, settings.randomize_temperature
    power_cosine = settings.guidance_schedule == "power-cosine"
    with torch.no_grad():
        for step in range(steps):
            ratio = (step + 1) / steps
            annealed = temperature * (1.0 - ratio)
            is_mask = ids == c.mask_token_id
            scale = guidance_scale_at(
                step, steps, settings.guidance_scale, settings.guidance_schedule, settings.guidance_power
            )
            if scale != 0:
                cond, uncond = model(ids, labels), model(ids, None)
                logits = (uncond if power_cosine else cond) + (cond - uncond) * scale
            else:
                logits = model(ids, labels)
            sampled = (logits + annealed * gumbel_noise(tuple(logits.shape), generator)).argmax(dim=-1)
            sampled_logits = logits.gather(-1, sampled[..., None]).squeeze(-1)
            sampled = torch.where(is_mask, sampled, ids)
            sampled_logits = torch.where(is_mask, sampled_logits, math.inf).float()
            mask_len = max(1, min(int(is_mask.sum(-1)[0]) - 1, tokens_to_remask(step, steps, c.seq_len)))
            confidence = sampled_logits + annealed * gumbel_noise(tuple(sampled_logits.shape), generator)
            cut_off = confidence.sort(dim=-1).values[:, mask_len - 1 : mask_len]
            ids = (
                sampled if step == steps - 1 else torch.where(confidence <= cut_off, c.mask_token_id, sampled)
            )
    return ids


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_size(size: str, dtypes: list[str], authors: bool, batch: int, runs: int, steps: int | None) -> dict:
    """Cases ``"<size> <dtype>"`` (and ``"<size> authors-float32"``), timed in interleaved rounds."""
    generator, tokenizer = build_models(size)
    c = generator.config
    if steps is not None:
        c.num_steps = steps
    labels = [(i * 125 + 7) % c.num_classes for i in range(batch)]
    settings = c.sampling_settings()
    methods = [*dtypes, *(["authors-float32"] if authors else [])]
    times: dict[str, dict[str, list[float]]] = {m: {"tokens": [], "decode": []} for m in methods}
    load_start = load_average()
    for dtype in dtypes:  # warm-up
        dt = DTYPES[dtype]
        tokenizer.decode(generator.generate(labels[:2], num_steps=1, seed=0, dtype=dt), dtype=dt)
    if authors:
        warm = dataclasses.replace(settings, num_steps=1)
        authors_generate(generator, torch.tensor(labels[:2]), warm, torch.Generator().manual_seed(0))
    for run in range(runs):
        for method in methods:
            if method == "authors-float32":
                rng, label_t = torch.Generator().manual_seed(run + 1), torch.tensor(labels)
                start = time.perf_counter()
                authors_generate(generator, label_t, settings, rng)
                t = time.perf_counter() - start
                times[method]["tokens"].append(t)
                print(f"[{size} {method}] run {run + 1}/{runs}: tokens {t:.1f} s", flush=True)
                continue
            dt = DTYPES[method]
            start = time.perf_counter()
            tokens = generator.generate(labels, seed=run + 1, dtype=dt)
            times[method]["tokens"].append(time.perf_counter() - start)
            start = time.perf_counter()
            images = tokenizer.decode(tokens, dtype=dt)
            times[method]["decode"].append(time.perf_counter() - start)
            assert tokens.shape == (batch, c.seq_len) and images.shape[0] == batch
            print(
                f"[{size} {method}] run {run + 1}/{runs}: tokens {times[method]['tokens'][-1]:.1f} s, "
                f"decode {times[method]['decode'][-1]:.1f} s",
                flush=True,
            )
    load_end = load_average()
    common = {
        "generator": f"{c.arch} {c.hidden_size}x{c.depth}, {sum(p.numel() for p in generator.parameters()) / 1e6:.0f}M",
        "tokenizer": "MaskGIT-VQGAN (2D, 16x16)" if size == "2d256" else SIZES[size],
        "tokenizer_params_M": round(sum(p.numel() for p in tokenizer.parameters()) / 1e6),
        "seq_len": c.seq_len,
        "sampling": f"{c.num_steps} steps, {c.guidance_schedule} guidance {c.guidance_scale}",
        "batch": batch,
        "runs": runs,
        "load_average_start": load_start,
        "load_average_end": load_end,
    }
    cases = {}
    for method, t in times.items():
        gen_s = statistics.median(t["tokens"])
        case = {
            **common,
            "dtype": method,
            "tokens_s": [round(x, 3) for x in t["tokens"]],
            "tokens_s_per_image": round(gen_s / batch, 4),
            "tokens_only_images_per_s": round(batch / gen_s, 4),
            "tokens_gflops_achieved": round(generation_flops(generator, batch) / gen_s / 1e9, 1),
        }
        if t["decode"]:
            dec_s = statistics.median(t["decode"])
            case.update(
                decode_s=[round(x, 3) for x in t["decode"]],
                decode_s_per_image=round(dec_s / batch, 4),
                s_per_image=round((gen_s + dec_s) / batch, 4),
                images_per_s=round(batch / (gen_s + dec_s), 4),
            )
        cases[f"{size} {method}"] = case
    return cases


def matmul_gflops(m: int, k: int, n: int, runs: int = 5) -> float:
    """Best-of-``runs`` float32 GFLOP/s of an (m, k) @ (k, n) product."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(runs))
    return 2 * m * k * n / best / 1e9


def ceiling(batch: int, target: float) -> dict:
    """Float32 matrix-product rates here vs the rate ``target`` s/image of L-32 tokens needs."""
    generator = Generator.from_preset("titok-l32").eval()
    c = generator.config
    flops_per_image = generation_flops(generator, batch) / batch
    rows = 2 * batch * (c.seq_len + 1)  # conditional + unconditional sequences, class token included
    out = {
        "fp32_gflops_square_2048": round(matmul_gflops(2048, 2048, 2048, runs=10), 1),
        f"fp32_gflops_mlp_{rows}x{c.hidden_size}x{c.intermediate_size}": round(
            matmul_gflops(rows, c.hidden_size, c.intermediate_size, runs=20), 1
        ),
        "l32_tokens_gflop_per_image": round(flops_per_image / 1e9, 1),
        "target_s_per_image": target,
        "gflops_needed_for_target": round(flops_per_image / target / 1e9, 1),
        "load_average": load_average(),
    }
    for key, value in out.items():
        print(f"{key}: {value}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["l32", "b64", "s128", "2d256"])
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--authors", action="store_true", help="also time the authors' float32 sampler")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="decoding steps (default: published)")
    parser.add_argument("--out", type=Path, default=RESULTS / "generation.json", help="results file")
    parser.add_argument("--ceiling", action="store_true", help="measure matrix-product rates only")
    parser.add_argument("--target", type=float, default=0.3, help="s/image target for --ceiling")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path: Path = args.out
    if args.ceiling:
        payload = json.loads(path.read_text()) if path.is_file() else {}
        payload["ceiling"] = {
            "threads": args.threads,
            "batch": args.batch,
            **ceiling(args.batch, args.target),
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")
        return
    cases: dict[str, dict] = {}
    payload: dict = {
        "what": "class-conditional generation on the CPU: Generator.generate (published sampling settings) "
        "+ TiTok.decode, random weights",
        "batch": args.batch,
        "cases": cases,
    }
    speedups: dict[str, float] = {}
    for size in args.sizes:
        cases.update(time_size(size, args.dtypes, args.authors, args.batch, args.runs, args.steps))
        authors = cases.get(f"{size} authors-float32")
        for dtype in args.dtypes if authors else []:
            ours = cases[f"{size} {dtype}"]
            speedups[f"{size} {dtype}"] = round(
                ours["tokens_only_images_per_s"] / authors["tokens_only_images_per_s"], 2
            )
        if speedups:
            payload["tokens_speedup_over_authors_float32"] = speedups
        write_results("generation", payload, path)
    for dtype in args.dtypes:
        one_d, two_d = cases.get(f"l32 {dtype}"), cases.get(f"2d256 {dtype}")
        if one_d and two_d:
            payload[f"speedup_1d32_over_2d256 {dtype}"] = {
                "tokens_only": round(
                    one_d["tokens_only_images_per_s"] / two_d["tokens_only_images_per_s"], 2
                ),
                "with_decoding": round(one_d["images_per_s"] / two_d["images_per_s"], 2),
            }
            print(
                f"{dtype}: 32 1D tokens vs 256 2D tokens, images/s ratio {payload[f'speedup_1d32_over_2d256 {dtype}']}"
            )
            write_results("generation", payload, path)
    for name, r in cases.items():
        with_decode = (
            f"{r['s_per_image']:7.3f} s/image  {r['images_per_s']:6.3f} images/s  (decode {r['decode_s_per_image']:.3f} s/image, "
            if "decode_s" in r
            else "tokens only  ("
        )
        print(
            f"{name:22s} {with_decode}tokens {r['tokens_s_per_image']:.3f} s/image, "
            f"{r['tokens_gflops_achieved']} GFLOP/s; load {r['load_average_start']})"
        )
    for name, ratio in speedups.items():
        print(f"{name}: tokens {ratio:.2f}x the authors' float32 sampler")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
