"""Tokenizer speed on this machine: encode and decode seconds per image.

Measures ``titok-l32`` at 256 px, batch 4, 2 threads: encode in float32 and bfloat16, decode
(ViT decoder + MaskGIT-VQGAN pixel decoder) in float32 and bfloat16. Weights are random: speed
does not depend on their values. Prints a table and writes benchmarks/results/tokenizer.json.

    python benchmarks/bench_tokenizer.py [--preset titok-l32] [--batch 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_seconds, write_results  # noqa: E402
from titok import TiTok  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="titok-l32")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TiTok.from_preset(args.preset).eval()
    size = model.config.image_size
    images = torch.rand(args.batch, 3, size, size)
    tokens = model.encode(images)
    rows = {}
    for dtype_name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
        enc, enc_all = median_seconds(lambda d=dtype: model.encode(images, dtype=d), runs=args.runs)
        dec, dec_all = median_seconds(lambda d=dtype: model.decode(tokens, dtype=d), runs=args.runs)
        rows[dtype_name] = {
            "encode_s_per_image": enc / args.batch,
            "decode_s_per_image": dec / args.batch,
            "encode_runs_s": enc_all,
            "decode_runs_s": dec_all,
        }
        print(
            f"{args.preset} {dtype_name:>8}: encode {enc / args.batch:.3f} s/img, "
            f"decode {dec / args.batch:.3f} s/img (batch {args.batch}, {args.threads} threads)"
        )
    path = write_results(
        "tokenizer",
        {
            "preset": args.preset,
            "image_size": size,
            "batch": args.batch,
            "results": rows,
            "targets": {"encode_float32": 1.1, "encode_bfloat16": 0.6, "decode_bfloat16": 1.3},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
