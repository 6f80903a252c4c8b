"""Decoder fine-tuning against images seen: PSNR, SSIM, rFID and the seam score on held-out images.

For each ``titok train stage2`` run folder, measures every checkpoint (and the export) on the 500
images the recipes hold out (seed 0, 64 px), beside the tokenizer it started from (step 0). rFID
is computed with the evaluation classifier (``--classifier``, the run's ``imagenette64-resnet``)
and, with ``--also``, with further feature networks: the perceptual loss's own classifier shows
how much of a gain is the loss reading its own network. Prints one JSON line per measurement,
merges them into ``benchmarks/results/finetune.json`` and, with ``--plot``, draws the curves.

Usage::

    python benchmarks/bench_finetune.py runs/finetune/full runs/finetune/nogan \\
        --classifier runs/builtin-flex/classifier --also runs/finetune/perceptual-net \\
        --plot docs/results/finetune/curves.png
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from titok.checkpoints import load_strict, read_state_dict
from titok.evaluation.reconstruction import DataSplit, evaluate_reconstruction
from titok.metrics import FeatureAccumulator, fid_between
from titok.models.classifier import load_classifier
from titok.models.titok import TiTok
from titok.reproduce.measure import real_summary
from titok.training.checkpointing import checkpoint_step, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "finetune.json"


def run_models(run: Path, start: str | None = None) -> tuple[dict, list[tuple[int, TiTok]]]:
    """(recipe, [(step, model)]) of a stage-2 run: the starting tokenizer (``start``, default the
    recipe's ``init_from``) and each checkpoint."""
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    base = TiTok.from_pretrained(start or recipe["init_from"])
    overrides = {k: v for k, v in (recipe.get("model") or {}).items() if k != "preset"}
    config = base.config.updated(**overrides)
    models = [(0, base)]
    for folder in list_checkpoints(run):
        model = TiTok(config)
        load_strict(model, read_state_dict(folder / "model.safetensors"), str(folder))
        models.append((checkpoint_step(folder), model))
    return recipe, models


def feed(accumulators: list[FeatureAccumulator]) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """An ``on_batch`` callback adding each batch's reconstructions to ``accumulators``."""

    def add(_originals: torch.Tensor, reconstructions: torch.Tensor) -> None:
        for accumulator in accumulators:
            accumulator.update(reconstructions)

    return add


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagenette"))
    parser.add_argument("--holdout", type=int, default=500)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--classifier", type=Path, default=ROOT / "runs" / "builtin-flex" / "classifier")
    parser.add_argument("--also", type=Path, nargs="*", default=[], help="more feature networks for rFID")
    parser.add_argument("--every", type=int, default=1, help="measure every N-th checkpoint (and the last)")
    parser.add_argument("--steps", type=int, nargs="*", default=None, help="measure only these steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument(
        "--samples",
        type=Path,
        default=None,
        help="write the bundled photographs: original | starting tokenizer | each run's last checkpoint",
    )
    parser.add_argument(
        "--sample-models",
        nargs="+",
        default=None,
        help="the models of --samples instead (built-in names or export folders), left to right",
    )
    parser.add_argument(
        "--start",
        default=None,
        help="the tokenizer the runs started from (default: their init_from; a folder when that "
        "built-in name has since been replaced, as imagenette64 was by its fine-tuned decoder)",
    )
    parser.add_argument(
        "--no-measure", action="store_true", help="measure nothing: draw --plot from the results file"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    if args.no_measure:
        missing = [run.name for run in args.runs if run.name not in results]
        if missing:
            parser.error(f"{args.results} has no entry for {', '.join(missing)}")
        network = load_classifier(args.classifier).name
    else:
        network = measure(args, results)
    if args.plot is not None:
        plot({run.name: results[run.name] for run in args.runs}, args.plot, network)
    if args.samples is not None:
        samples_figure(sample_models(args), args.samples)


def measure(args: argparse.Namespace, results: dict) -> str:
    """Measure every chosen checkpoint of each run into ``results`` (written to ``--results``
    after each run); returns the name of the rFID network."""
    split = DataSplit(args.data, "val", args.holdout, 0, args.images)
    networks = [load_classifier(p).eval() for p in [args.classifier, *args.also]]
    references = {net.name: real_summary(net, split, 64).stats for net in networks}
    for run in args.runs:
        recipe, models = run_models(run, args.start)
        batch = int(recipe["training"]["batch_size"])
        rows = []
        chosen = [m for i, m in enumerate(models) if i % args.every == 0 or i == len(models) - 1]
        if args.steps is not None:
            chosen = [m for m in models if m[0] in args.steps]
        for step, model in chosen:
            model.eval()
            start = time.perf_counter()
            row: dict = {"step": step, "images_seen": step * batch}
            # One decoding pass: the first network's rFID comes with the other metrics, the
            # others' from the same reconstructions.
            extra = [FeatureAccumulator(net, keep_probs=False) for net in networks[1:]]
            metrics = evaluate_reconstruction(
                model,
                split,
                networks[0],
                batch_size=50,
                reference=references[networks[0].name],
                progress=False,
                on_batch=feed(extra),
            )
            first = networks[0].name
            row[f"rFID[{first}]"] = metrics[f"rFID[{first}]"]
            for key in (
                "PSNR",
                "SSIM",
                "seam_score",
                "seam_score_originals",
                "pattern_score",
                "pattern_score_originals",
                "lattice_score",
                "lattice_score_originals",
            ):
                row[key] = metrics[key]
            for net, acc in zip(networks[1:], extra, strict=True):
                row[f"rFID[{net.name}]"] = fid_between(acc.compute().stats, references[net.name])
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            print(json.dumps({"run": run.name, **{k: round(v, 4) for k, v in row.items()}}), flush=True)
        if run.name in results and args.steps is not None:  # merge with the steps measured before
            kept = [r for r in results[run.name]["curve"] if r["step"] not in {r2["step"] for r2 in rows}]
            rows = sorted(kept + rows, key=lambda r: r["step"])
        results[run.name] = {
            "source": str(run),
            "init_from": recipe["init_from"],
            "model": recipe.get("model"),
            "losses": recipe.get("losses"),
            "optimizer": recipe.get("optimizer"),
            "max_train_steps": recipe["training"]["max_train_steps"],
            "batch_size": batch,
            "heldout_images": args.images,
            "curve": rows,
            "torch": torch.__version__,
        }
        merge_entry(args.results, run.name, results[run.name])
    return networks[0].name


def merge_entry(path: Path, name: str, entry: dict) -> None:
    """Write ``entry`` as ``name`` into the results file, re-read under an exclusive lock so that
    runs measured side by side keep each other's entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = json.loads(path.read_text()) if path.is_file() else {}
        current[name] = entry
        path.write_text(json.dumps(current, indent=2) + "\n")


def sample_models(args: argparse.Namespace) -> list[TiTok]:
    """The models of ``--samples``: ``--sample-models`` if given, else the first run's starting
    tokenizer and each run's last checkpoint."""
    if args.sample_models:
        return [TiTok.from_pretrained(spec) for spec in args.sample_models]
    lasts = [run_models(run, args.start)[1] for run in args.runs]
    return [lasts[0][0][1], *(models[-1][1] for models in lasts)]


def samples_figure(models: list[TiTok], path: Path) -> None:
    """A row per bundled photograph: the 64 px input, then each model's reconstruction (2x, nearest)."""
    from titok.images import open_image, pil_to_tensor, resize_center_crop, tensor_to_pil
    from titok.samples import bundled_samples_dir

    rows = []
    for photo in sorted(bundled_samples_dir().glob("*.jpg")):
        image = pil_to_tensor(resize_center_crop(open_image(photo), 64))[None]
        with torch.no_grad():
            outs = [m.eval().reconstruct(image).clamp(0, 1) for m in models]
        rows.append(torch.cat([image, *outs], dim=3))
    grid = torch.cat(rows, dim=2)[0]
    grid = grid.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor_to_pil(grid).save(path)
    print(f"wrote {path}")


def plot(entries: dict[str, dict], path: Path, network: str) -> None:
    """PSNR, rFID[network], the seam and the lattice score against images seen, a line per run."""
    import matplotlib

    from common import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        ("PSNR", "held-out PSNR (dB)"),
        (f"rFID[{network}]", f"rFID [{network}]"),
        ("seam_score", "seam score"),
        ("lattice_score", "lattice score"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for name, entry in entries.items():
        curve = entry["curve"]
        for ax, (key, _) in zip(axes, keys, strict=True):
            ax.plot(
                [r["images_seen"] for r in curve],
                [r.get(key, math.nan) for r in curve],
                marker="o",
                label=name,
            )
    first = next(iter(entries.values()))["curve"][0]
    for ax, key in ((axes[2], "seam_score"), (axes[3], "lattice_score")):
        ax.axhline(first.get(f"{key}_originals", math.nan), color="grey", linestyle="--", label="originals")
    for ax, (_, label) in zip(axes, keys, strict=True):
        ax.set_xlabel("images seen in fine-tuning")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
