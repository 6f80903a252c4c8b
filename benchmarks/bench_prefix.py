"""Reconstruction quality against the number of tokens, on held-out images.

For each tokenizer (a ``titok train`` run folder, whose ``export/`` is read, or an export folder,
or a built-in name), measures PSNR and SSIM of the reconstructions from the first k tokens for
each k (:func:`titok.evaluation.prefix.prefix_curve`), and, with ``--positions``, the output
change when one token position is swapped (:func:`titok.evaluation.prefix.position_sensitivity`).
A fixed-length model is measured at its own K only, and so is a 2D VQGAN (a ``titok train vqgan``
run folder: its N = (64 / f)^2 grid tokens, drawn apart in the plot). Held-out images: the 500
that the recipes hold out (seed 0), at 64 px. Prints one JSON line per model, merges them into
``benchmarks/results/prefix.json`` and, with ``--plot``, draws PSNR (rFID, probe) against k.
Each entry records the classifier its rFID was measured with.

Usage::

    python benchmarks/bench_prefix.py runs/flex-k32 runs/fixed-k8 --name-prefix screen- \\
        --plot docs/results/prefix/screening.png
    python benchmarks/bench_prefix.py ENTRY [ENTRY ...] --replot --plot PATH   # entries already measured
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from titok.evaluation.prefix import position_sensitivity, prefix_curve
from titok.evaluation.reconstruction import DataSplit, Tokenizer, split_batches
from titok.metrics.image_quality import psnr, ssim
from titok.models.grid_tokenizer import GridTokenizer
from titok.models.prefixes import powers_of_two
from titok.models.titok import TiTok

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "prefix.json"
#: How the plot draws the models measured at one length, by entry kind: (line style, colour,
#: marker size, filled, legend label). The 2D squares are hollow and on top, so that a star at the
#: same point stays visible.
SINGLE_LENGTH_STYLES = {
    "2d": ("s--", "grey", 11, False, "2D VQGANs"),
    "1d": ("*--", "k", 10, True, "fixed-length models"),
}


def load(spec: str, image_size: int = 64) -> tuple[str, Tokenizer, dict]:
    """(name, model, recipe settings) of a run folder, an export folder or a built-in name; a
    ``titok train vqgan`` run folder gives a :class:`GridTokenizer` at ``image_size``."""
    path = Path(spec)
    settings: dict = {}
    mode = None
    if (path / "export").is_dir():
        import yaml

        recipe = yaml.safe_load((path / "recipe.yaml").read_text())
        mode = recipe.get("mode")
        settings = {
            "mode": mode,
            "prefix": recipe.get("prefix"),
            "model": recipe.get("model"),
            "max_train_steps": recipe["training"]["max_train_steps"],
            "batch_size": recipe["training"]["batch_size"],
        }
        path = path / "export"
    model: Tokenizer
    if mode == "vqgan":
        model = GridTokenizer.from_pretrained(path, image_size)
    else:
        model = TiTok.from_pretrained(str(path) if path.exists() else spec)
    name = spec
    if Path(spec).exists():  # a run's export is named for its run folder, so two runs never collide
        name = Path(spec).parent.name if Path(spec).name == "export" else Path(spec).name
    return name, model.eval(), settings


@torch.inference_mode()
def grid_row(model: GridTokenizer, images: torch.Tensor, batch_size: int = 100) -> dict[str, float]:
    """PSNR and SSIM of a 2D tokenizer's reconstructions from all its N tokens (one row of a curve)."""
    recon = model.decode(model.encode(images, batch_size), batch_size)
    return {
        "num_tokens": model.num_tokens,
        "psnr": float(psnr(recon, images).mean()),
        "ssim": float(ssim(recon, images).mean()),
        "psnr_gain": 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagenette"))
    parser.add_argument("--holdout", type=int, default=500)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--lengths", type=int, nargs="*", default=None, help="default: 1, 2, 4, ..., K")
    parser.add_argument("--positions", action="store_true", help="also the sensitivity of each position")
    parser.add_argument(
        "--force-prefix", action="store_true", help="also decode prefixes of fixed-length models (a control)"
    )
    parser.add_argument("--name-prefix", default="", help="prepended to each model's name in the results")
    parser.add_argument(
        "--classifier", type=Path, default=None, help="feature network folder: adds rFID[net] at each k"
    )
    parser.add_argument(
        "--probe", type=int, default=0, metavar="N", help="linear-probe top-1 at each k, N training images"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument(
        "--replot", action="store_true", help="MODELS are entries of the results file: only draw --plot"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    if args.replot:
        missing = [n for n in args.models if n not in results]
        if missing or args.plot is None:
            raise SystemExit(f"--replot needs --plot and entries of {args.results}; not there: {missing}")
        plot({n: results[n] for n in args.models}, args.plot)
        return
    images = None
    names = []
    net = reference = None
    if args.classifier is not None:
        from titok.models.classifier import load_classifier
        from titok.reproduce.measure import real_summary

        net = load_classifier(args.classifier).eval()
        reference = real_summary(net, DataSplit(args.data, "val", args.holdout, 0, args.images), 64)
    for spec in args.models:
        name, model, settings = load(spec)
        if images is None:
            split = DataSplit(args.data, "val", args.holdout, 0, args.images)
            images = torch.cat(
                [b["image"] for b in split_batches(split, model.image_size, 100, progress=False)]
            )
        k = model.num_tokens
        grid = isinstance(model, GridTokenizer)
        variable = not grid and model.config.variable_length
        lengths = [n for n in (args.lengths or powers_of_two(k)) if n <= k]
        if not variable and (grid or not args.force_prefix):
            lengths = [k]
        start = time.perf_counter()
        entry = {
            "source": spec,
            "kind": "2d" if grid else "1d",
            "num_latent_tokens": k,
            "variable_length": variable,
            "hidden_tail": None if grid else model.config.hidden_tail,
            "heldout_images": len(images),
            "settings": settings,
            "forced": not variable and len(lengths) > 1,
            "classifier": None if args.classifier is None else str(args.classifier),
            "curve": [grid_row(model, images)]
            if grid
            else prefix_curve(model, images, lengths, force_prefix=args.force_prefix),
        }
        if net is not None:
            from titok.reproduce.measure import reconstruction_metrics

            split = DataSplit(args.data, "val", args.holdout, 0, args.images)
            for row in entry["curve"]:
                k_row = int(row["num_tokens"])
                metrics, _, _ = reconstruction_metrics(
                    model,
                    split,
                    net,
                    reference,
                    model.image_size,
                    num_tokens=None if k_row == k else k_row,
                    force_prefix=args.force_prefix,
                )
                row[f"rFID[{net.name}]"] = metrics[f"rFID[{net.name}]"]
        if args.probe:
            from titok.evaluation.token_probe import token_features
            from titok.reproduce.measure import probe_metrics

            train_split = DataSplit(args.data, "train", args.holdout, 0, args.probe)
            val_split = DataSplit(args.data, "val", args.holdout, 0, args.images)
            feats = (
                token_features(model, train_split, batch_size=50, progress=False),
                token_features(model, val_split, batch_size=50, progress=False),
            )
            for row in entry["curve"]:
                probe = probe_metrics(
                    model, train_split, val_split, model.image_size, 10, int(row["num_tokens"]), feats
                )
                row["probe_top1_concat"] = probe["top1_concat"]
                row["probe_top1_mean"] = probe["top1_mean"]
        if args.positions and not grid:
            entry["position_sensitivity"] = position_sensitivity(model, images)
        entry["seconds"] = time.perf_counter() - start
        entry["torch"] = torch.__version__
        results[args.name_prefix + name] = entry
        names.append(args.name_prefix + name)
        curve = {row["num_tokens"]: round(row["psnr"], 2) for row in entry["curve"]}
        print(json.dumps({"model": args.name_prefix + name, "psnr": curve}), flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    if args.plot is not None:
        plot({n: results[n] for n in names}, args.plot)


def plot(entries: dict[str, dict], path: Path) -> None:
    """PSNR, rFID and probe top-1 against k: a line per variable-length (or forced) model, stars
    for fixed-length models at their own K, squares for 2D VQGANs at their N. rFID only for the
    entries measured with the classifier most of them used (an rFID of another network is another
    scale)."""
    import matplotlib

    from common import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def key_like(prefix: str) -> str | None:
        for entry in entries.values():
            for k in entry["curve"][0]:
                if k.startswith(prefix):
                    return k
        return None

    panels = [("psnr", "held-out PSNR (dB)")]
    for prefix, label in (
        ("rFID[", "rFID (the run's classifier)"),
        ("probe_top1_concat", "probe top-1 (concat)"),
    ):
        key = key_like(prefix)
        if key is not None:
            panels.append((key, label))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False, sharex=True)
    classifiers = [e.get("classifier") for e in entries.values() if e.get("classifier")]
    common = max(set(classifiers), key=classifiers.count) if classifiers else None
    # One colour per entry in every panel (a panel may skip an entry).
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {name: cycle[i % len(cycle)] for i, name in enumerate(entries)}
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        # one dashed series per kind of single-length model: (k, value) points
        points: dict[str, list[tuple[int, float]]] = {"2d": [], "1d": []}
        for name, entry in entries.items():
            rows = [r for r in entry["curve"] if key in r]
            if not rows or (key.startswith("rFID[") and common and entry.get("classifier") != common):
                continue
            if entry["variable_length"] or entry.get("forced"):
                style = ":" if entry.get("forced") else "-"
                shown = f"{name} (prefixes forced)" if entry.get("forced") else name
                ax.plot(
                    [r["num_tokens"] for r in rows],
                    [r[key] for r in rows],
                    style,
                    marker="o",
                    color=colours[name],
                    label=shown,
                )
            else:
                points[entry.get("kind", "1d")].append((entry["num_latent_tokens"], rows[0][key]))
        for kind, (style, colour, size, filled, shown) in SINGLE_LENGTH_STYLES.items():
            if points[kind]:
                ks, values = zip(*sorted(points[kind]), strict=True)
                hollow = {} if filled else {"markerfacecolor": "none", "markeredgewidth": 2, "zorder": 3}
                ax.plot(ks, values, style, color=colour, markersize=size, label=shown, **hollow)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="tokens decoded (k)", ylabel=label)
        if key.startswith("rFID[") and common:
            ax.set_title(f"classifier: {common}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
