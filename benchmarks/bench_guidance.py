"""Sampling settings of a reproduction run's generator: class agreement, gFID and IS per setting.

The MaskGIT generator samples with classifier-free guidance (``guidance_scale``, raised
linearly over the steps) and Gumbel noise on the confidences (``randomize_temperature``).
This script samples the same class-balanced labels under each combination of the settings
given, and measures them with the run's own classifier against its held-out images, as the
reproduction's ``eval-generation`` stage does: gFID[net], IS[net] and the share of samples
assigned to the requested class. Settings are chosen on one seed (``--seed``, 1000 by default:
not the seed of the reproduction's report) and can then be checked on another.

Usage::

    python benchmarks/bench_guidance.py runs/imagenette64-builtin --scales 2 3 4 6 --temperatures 1 2

Prints one JSON line per setting and writes ``benchmarks/results/guidance.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from titok.reproduce.budget import IMAGE_SIZE
from titok.reproduce.measure import generation_metrics_for, real_summary

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "guidance.json"


class Sampler(torch.nn.Module):
    """A generator with fixed sampling settings, called like the generator itself."""

    def __init__(self, generator: torch.nn.Module, guidance_scale: float, temperature: float) -> None:
        super().__init__()
        self.generator = generator
        self.guidance_scale = guidance_scale
        self.temperature = temperature

    def generate(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        return self.generator.generate(  # type: ignore[operator]
            labels, seed=seed, guidance_scale=self.guidance_scale, randomize_temperature=self.temperature
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a `titok reproduce` or built-in run folder")
    parser.add_argument("--generator", default="1d", help="generator-{name} sub-folder of the run")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagenette"))
    parser.add_argument("--scales", type=float, nargs="+", default=[2.0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[2.0])
    parser.add_argument("--num", type=int, default=500, help="samples per setting (class-balanced)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from titok.class_names import IMAGENETTE_CLASSES
    from titok.models.generator import Generator
    from titok.reproduce import Budget, Run

    state = json.loads((args.run / "state.json").read_text())
    run = Run(
        args.run, Budget(**state["budget"]), args.data, latent_centering=state.get("latent_centering", False)
    )
    tokenizer_name = state["stages"][f"tokens-{args.generator}"]["tokenizer"]
    tokenizer = run.load_tokenizer(tokenizer_name)
    generator = Generator.from_pretrained(run.path(f"generator-{args.generator}", "export")).eval()
    net = run.feature_network()
    reference = real_summary(net, run.val_split(run.budget.eval_images), IMAGE_SIZE)

    rows = []
    for scale in args.scales:
        for temperature in args.temperatures:
            start = time.perf_counter()
            metrics, _ = generation_metrics_for(
                Sampler(generator, scale, temperature),
                tokenizer,
                net,
                reference,
                args.num,
                len(IMAGENETTE_CLASSES),
                seed=args.seed,
            )
            row = {"guidance_scale": scale, "randomize_temperature": temperature, **metrics}
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            print(
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                flush=True,
            )

    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results[f"{args.run.name}/generator-{args.generator}/seed{args.seed}"] = {
        "run": str(args.run),
        "tokenizer": tokenizer_name,
        "seed": args.seed,
        "num_images": args.num,
        "rows": rows,
        "torch": torch.__version__,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
