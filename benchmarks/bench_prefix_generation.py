"""Generation at any length: gFID, IS, class agreement and speed against the number of tokens k.

For each generator (an export folder) and each k, samples ``--images`` class-balanced images of
the first k tokens (a generator trained on prefixes samples k-token sequences; another one
samples all K and keeps the first k), decodes them with the tokenizer (trained on prefixes) and
measures them with the run's classifier against the held-out images, as the reproduction's
generation figures. Speed: images/s of sampling + decoding one batch (median of ``--runs``).
Results merge into ``benchmarks/results/prefix-generation.json``.

Usage::

    python benchmarks/bench_prefix_generation.py --tokenizer runs/flex-k32/export \\
        --classifier runs/builtin-flex/classifier runs/gen-full/export runs/gen-prefix/export
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from titok.evaluation.reconstruction import DataSplit
from titok.models.classifier import load_classifier
from titok.models.generator import Generator
from titok.models.prefixes import powers_of_two
from titok.models.titok import TiTok
from titok.reproduce.measure import generation_metrics_for, generation_speed, real_summary

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "prefix-generation.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("generators", nargs="+", type=Path, help="generator export folders")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder or built-in name")
    parser.add_argument("--classifier", required=True, type=Path, help="the run's classifier folder")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagenette"))
    parser.add_argument("--holdout", type=int, default=500)
    parser.add_argument("--images", type=int, default=500, help="generated images per (generator, k)")
    parser.add_argument("--lengths", type=int, nargs="*", default=None, help="default: 1, 2, 4, ..., K")
    parser.add_argument("--batch-size", type=int, default=32, help="batch of the speed measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--name-prefix", default="")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = TiTok.from_pretrained(args.tokenizer).eval()
    net = load_classifier(args.classifier).eval()
    reference = real_summary(net, DataSplit(args.data, "val", args.holdout, 0, args.images), tok.image_size)
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    classes = 10
    for folder in args.generators:
        gen = Generator.from_pretrained(folder).eval()
        rows = []
        for k in args.lengths or powers_of_two(tok.num_tokens):
            start = time.perf_counter()
            metrics, _ = generation_metrics_for(gen, tok, net, reference, args.images, classes, num_tokens=k)
            speed = generation_speed(gen, tok, classes, args.batch_size, args.runs, num_tokens=k)
            row = {"num_tokens": k, **metrics, **speed, "seconds": time.perf_counter() - start}
            rows.append(row)
            print(
                json.dumps({"generator": str(folder), **{a: round(b, 4) for a, b in row.items()}}), flush=True
            )
        name = args.name_prefix + (folder.parent.name if folder.name == "export" else folder.name)
        results[name] = {
            "generator": str(folder),
            "tokenizer": args.tokenizer,
            "variable_length": gen.config.variable_length,
            "sampling": {
                "num_steps": gen.config.num_steps,
                "guidance_scale": gen.config.guidance_scale,
                "randomize_temperature": gen.config.randomize_temperature,
            },
            "threads": args.threads,
            "torch": torch.__version__,
            "rows": rows,
        }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
