"""The built-in generator's samples decoded by several tokenizers that read the same tokens.

One row per class, ``--per-class`` samples per tokenizer side by side (seed 0): what decoder
fine-tuning changes in generated images, with the tokens held fixed.

Usage::

    python benchmarks/decoder_grid.py runs/fixed-k32-before imagenette64 -o docs/results/finetune/generated.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import titok
from titok.images import tensor_to_pil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tokenizers", nargs="+", help="tokenizer folders or built-in names")
    parser.add_argument("--generator", default="imagenette64")
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    generator = titok.Generator.from_pretrained(args.generator)
    names = list(generator.config.class_names or [])
    if not names:
        parser.error(f"{args.generator} is not class-conditioned")
    tokens = generator.generate([n for n in names for _ in range(args.per_class)], seed=args.seed)
    blocks = []
    for spec in args.tokenizers:
        model = titok.TiTok.from_pretrained(spec).eval()
        with torch.no_grad():
            images = model.decode(tokens).clamp(0, 1)  # (classes * per_class, 3, H, W)
        size = images.shape[-1]
        rows = images.view(len(names), args.per_class, 3, size, size)
        blocks.append(torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1))
    gap = torch.ones(3, blocks[0].shape[1], 8)
    grid = torch.cat([b for block in blocks for b in (block, gap)][:-1], dim=2)
    grid = grid.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tensor_to_pil(grid).save(args.output)
    print(f"wrote {args.output} (classes top to bottom: {', '.join(names)})")


if __name__ == "__main__":
    main()
