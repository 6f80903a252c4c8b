"""Token agreement of bfloat16 against float32: ``TiTok.encode`` on real images and
``Generator.generate`` for a fixed seed, on trained models (default: the built-in imagenette64 pair).

Whoever pretokenizes a dataset or samples in bfloat16 wants to know how many tokens it changes.

* **encode**: the tokenizer (``--tokenizer``) encodes the images of ``--data`` (default
  ``../shared/data/imagenette``; by default its held-out split of the built-in run: ``--split val
  --holdout 500 --holdout-seed 0``; ``--max-images N`` keeps the first N) with ``dtype=float32``
  and ``dtype=bfloat16``. Reported: the fraction of tokens that agree, of images whose K tokens
  all agree, and the agreement at each token position.
* **generation**: the generator (``--generator``) samples ``--per-class`` sequences of every class
  (``--classes`` limits them) with its sampling defaults and one random generator seeded with
  ``--seed``, once per dtype. The random stream does not depend on the tokens, so the two runs
  draw the same noise: a difference comes from bfloat16 alone. Reported: token agreement,
  identical sequences, and for each sequence the first decoding step after which the two runs
  differ (once they do, later steps build on different tokens).

Usage: ``python benchmarks/bench_bf16_agreement.py [--tokenizer imagenette64] [--generator
imagenette64] [--data PATH] [--split val|train|all] [--max-images N] [--per-class 8]
[--threads 2] [--out PATH]``; prints the figures and writes ``benchmarks/results/bf16_agreement.json``
(or ``--out``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results  # noqa: E402
from titok import Generator, TiTok  # noqa: E402
from titok.evaluation.reconstruction import DataSplit, split_batches  # noqa: E402
from titok.loading import load_tokenizer  # noqa: E402

#: Imagenette shards beside the repository (the script runs from the repository root).
DEFAULT_DATA = "../shared/data/imagenette"


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    """How far two token tensors [N, K] agree: overall, whole sequences, per position."""
    same = a == b
    return {
        "sequences": a.shape[0],
        "tokens_per_sequence": a.shape[1],
        "token_agreement": round(same.float().mean().item(), 6),
        "identical_sequences": round(same.all(dim=1).float().mean().item(), 6),
        "agreement_per_position": [round(x, 4) for x in same.float().mean(dim=0).tolist()],
    }


def encode_agreement(model: TiTok, split: DataSplit, batch_size: int) -> dict:
    """Tokens of every image of ``split`` in float32 and in bfloat16, compared."""
    if model.is_vae:
        raise SystemExit("error: a VAE tokenizer has no code ids to compare; pass a VQ tokenizer")
    fp32, bf16 = [], []
    for batch in split_batches(split, model.image_size, batch_size, desc="encode"):
        fp32.append(model.encode(batch["image"], batch_size=batch_size, dtype=torch.float32))
        bf16.append(model.encode(batch["image"], batch_size=batch_size, dtype=torch.bfloat16))
    return {"data": split.describe(), **agreement(torch.cat(fp32), torch.cat(bf16))}


def _recorder(states: list[torch.Tensor]) -> Callable[[int, torch.Tensor], None]:
    """An ``on_step`` callback keeping a copy of the ids after every step in ``states``."""
    return lambda _step, ids: states.append(ids.clone())


def sample(
    generator: Generator, labels: torch.Tensor, batch_size: int, seed: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [N, K] and the ids after every step [N, T, K], one random stream over the batches."""
    rng = torch.Generator().manual_seed(seed)
    tokens, steps = [], []
    for chunk in labels.split(batch_size):
        states: list[torch.Tensor] = []
        tokens.append(generator.generate(chunk, generator=rng, dtype=dtype, on_step=_recorder(states)))
        steps.append(torch.stack(states, dim=1))
    return torch.cat(tokens), torch.cat(steps)


def generation_agreement(generator: Generator, labels: torch.Tensor, batch_size: int, seed: int) -> dict:
    """Sequences of ``labels`` in float32 and in bfloat16 from the same seed, compared."""
    fp32, fp32_steps = sample(generator, labels, batch_size, seed, torch.float32)
    bf16, bf16_steps = sample(generator, labels, batch_size, seed, torch.bfloat16)
    differs = (fp32_steps != bf16_steps).any(dim=2)  # [N, T]: the ids after step t differ
    num_steps = differs.shape[1]
    first = torch.where(differs.any(dim=1), differs.float().argmax(dim=1), torch.full_like(labels, -1))
    c = generator.config
    return {
        "sampling": f"{c.num_steps} steps, {c.guidance_schedule} guidance {c.guidance_scale}, "
        f"temperature {c.randomize_temperature}",
        "seed": seed,
        "classes": sorted(set(labels.tolist())),
        **agreement(fp32, bf16),
        "first_differing_step_counts": {
            "never": int((first < 0).sum()),
            **{str(s): int((first == s).sum()) for s in range(num_steps)},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default="imagenette64", help="tokenizer (default: the built-in one)")
    parser.add_argument("--generator", default="imagenette64", help="generator (default: the built-in one)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="images: shards, folder or list")
    parser.add_argument("--split", default="val", choices=["all", "train", "val"])
    parser.add_argument("--holdout", type=int, default=500)
    parser.add_argument("--holdout-seed", type=int, default=0)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=8, help="generated sequences per class")
    parser.add_argument("--classes", type=int, nargs="+", default=None, help="class ids (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "bf16_agreement.json")
    parser.add_argument("--skip-encode", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    payload: dict = {"what": "token agreement of bfloat16 against float32", "threads": args.threads}
    if not args.skip_encode:
        tokenizer = load_tokenizer(args.tokenizer).eval()
        split = DataSplit(args.data, args.split, args.holdout, args.holdout_seed, args.max_images)
        payload["encode"] = {"tokenizer": args.tokenizer, **encode_agreement(tokenizer, split, args.batch)}
        write_results("bf16_agreement", payload, args.out)
    if not args.skip_generation:
        generator = Generator.from_pretrained(args.generator)
        classes = args.classes if args.classes is not None else range(generator.config.num_classes)
        labels = torch.tensor([y for y in classes for _ in range(args.per_class)])
        payload["generation"] = {
            "generator": args.generator,
            **generation_agreement(generator, labels, args.batch, args.seed),
        }
    path = write_results("bf16_agreement", payload, args.out)
    for part in ("encode", "generation"):
        if part in payload:
            r = payload[part]
            print(
                f"{part}: {r['sequences']} sequences of {r['tokens_per_sequence']} tokens, "
                f"token agreement {r['token_agreement']:.4f}, identical sequences {r['identical_sequences']:.4f}"
            )
    if "generation" in payload:
        print(
            f"generation: first step after which bfloat16 differs: {payload['generation']['first_differing_step_counts']}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
