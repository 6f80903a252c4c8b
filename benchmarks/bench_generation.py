"""Speed of class-conditional image generation on the CPU: MaskGIT tokens, then tokenizer decoding.

Three published sizes, random weights (speed does not depend on their values), each with its
published sampling settings:

* ``l32``: BERT 768x24 generator (32 tokens, 8 steps, linear guidance 4.5) + TiTok-L-32 decoder;
* ``b64``: BERT 768x24 generator (64 tokens, 8 steps, linear guidance 3.0) + TiTok-B-64 decoder;
* ``s128``: U-ViT 1024x20 generator (128 tokens, 64 steps, power-cosine guidance 6.9) + TiTok-S-128.

For each size and dtype (float32, bfloat16 autocast): a small warm-up (one 1-step generation and
one decode of 2 images), then ``--runs`` timed runs of ``Generator.generate`` for ``--batch``
labels and ``TiTok.decode`` of the tokens; the median is reported as s/image and images/s, for
tokens only and for images (tokens + decode). Also: approximate achieved GFLOP/s of the token
part, and the load average (the machine may be shared: a high load slows every number).

Usage: ``python benchmarks/bench_generation.py [--sizes l32 b64 s128] [--dtypes float32 bfloat16]
[--batch 8] [--runs 1] [--threads 2]``; writes ``benchmarks/results/generation.json`` after every
case (a stopped run keeps the cases done).

``--ceiling`` instead measures what this CPU does in float32 matrix products (a square 2048
product and the generator's own MLP product for a guided L-32 batch of 8) and the rate a given
s/image target (``--target``, default 0.3) would need for L-32 tokens; it adds them to the
results file under ``ceiling`` and runs no generation.
"""

from __future__ import annotations

import argparse
import json
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
from titok.sampling import guidance_scale_at, tokens_to_remask  # noqa: E402

SIZES = {"l32": "titok-l32", "b64": "titok-b64", "s128": "titok-s128", "2d256": "titok-l32"}
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


def time_case(size: str, dtype: str, batch: int, runs: int) -> dict:
    preset, dt = SIZES[size], DTYPES[dtype]
    torch.manual_seed(0)
    if size == "2d256":
        generator = Generator.from_preset(preset, seq_len=256, codebook_size=1024).eval()
        tokenizer = GridTokenizer(VQGAN(), 256).eval()
    else:
        generator = Generator.from_preset(preset).eval()
        tokenizer = TiTok.from_preset(preset).eval()
    c = generator.config
    labels = [(i * 125 + 7) % c.num_classes for i in range(batch)]
    autocast = torch.autocast("cpu", dtype=dt, enabled=dt != torch.float32)
    load_start = load_average()
    with autocast:
        tokenizer.decode(generator.generate(labels[:2], num_steps=1, seed=0), dtype=dt)  # warm-up
    gen_times, dec_times = [], []
    for run in range(runs):
        start = time.perf_counter()
        with autocast:
            tokens = generator.generate(labels, seed=run + 1)
        gen_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        images = tokenizer.decode(tokens, dtype=dt)
        dec_times.append(time.perf_counter() - start)
        print(
            f"[{size} {dtype}] run {run + 1}/{runs}: tokens {gen_times[-1]:.1f} s, decode {dec_times[-1]:.1f} s",
            flush=True,
        )
    assert tokens.shape == (batch, c.seq_len) and images.shape[0] == batch
    gen_s, dec_s = statistics.median(gen_times), statistics.median(dec_times)
    return {
        "generator": f"{c.arch} {c.hidden_size}x{c.depth}, {sum(p.numel() for p in generator.parameters()) / 1e6:.0f}M",
        "tokenizer": "MaskGIT-VQGAN (2D, 16x16)" if size == "2d256" else preset,
        "tokenizer_params_M": round(sum(p.numel() for p in tokenizer.parameters()) / 1e6),
        "seq_len": c.seq_len,
        "sampling": f"{c.num_steps} steps, {c.guidance_schedule} guidance {c.guidance_scale}",
        "dtype": dtype,
        "batch": batch,
        "runs": runs,
        "tokens_s": [round(t, 3) for t in gen_times],
        "decode_s": [round(t, 3) for t in dec_times],
        "tokens_s_per_image": round(gen_s / batch, 4),
        "decode_s_per_image": round(dec_s / batch, 4),
        "s_per_image": round((gen_s + dec_s) / batch, 4),
        "images_per_s": round(batch / (gen_s + dec_s), 4),
        "tokens_only_images_per_s": round(batch / gen_s, 4),
        "tokens_gflops_achieved": round(generation_flops(generator, batch) / gen_s / 1e9, 1),
        "load_average_start": load_start,
        "load_average_end": load_average(),
    }


def matmul_gflops(m: int, k: int, n: int, runs: int = 5) -> float:
    """Best-of-``runs`` float32 GFLOP/s of an (m, k) @ (k, n) product."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(runs))
    return 2 * m * k * n / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ceiling", action="store_true", help="measure matrix-product rates only")
    parser.add_argument("--target", type=float, default=0.3, help="s/image target for --ceiling")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.ceiling:
        path = RESULTS / "generation.json"
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
    payload = {
        "what": "class-conditional generation on the CPU: Generator.generate (published sampling settings) "
        "+ TiTok.decode, random weights",
        "batch": args.batch,
        "cases": cases,
    }
    for size in args.sizes:
        for dtype in args.dtypes:
            cases[f"{size} {dtype}"] = time_case(size, dtype, args.batch, args.runs)
            path = write_results("generation", payload)
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
            path = write_results("generation", payload)
    for name, r in cases.items():
        print(
            f"{name:15s} {r['s_per_image']:7.3f} s/image  {r['images_per_s']:6.3f} images/s  "
            f"(tokens {r['tokens_s_per_image']:.3f} s/image, decode {r['decode_s_per_image']:.3f} s/image, "
            f"{r['tokens_gflops_achieved']} GFLOP/s; load {r['load_average_start']})"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
