"""Learning curves of tokenizer runs on held-out images: PSNR, SSIM, codebook use, token sensitivity.

Reads every checkpoint of one or more ``titok train`` run folders (TiTok ``single_stage``,
``stage1`` and ``stage2`` runs or 2D ``vqgan`` runs; their ``recipe.yaml`` says which) and
measures each on the same held-out images
(the 500 images that the recipes hold out, seed 0, at 64 px): PSNR and SSIM of the
reconstructions, codes used and their perplexity, and for TiTok the token sensitivity and the
mean-image PSNR of :mod:`titok.evaluation.token_use`. A stage-1 TiTok predicts its teacher's
codes: its PSNR is the teacher's decoding of the predicted codes, and ``code_accuracy`` the
share of them equal to the teacher's own codes of the image. Prints one JSON line per checkpoint, writes
``benchmarks/results/learning.json`` (one entry per run folder) and, with matplotlib, a plot of
PSNR and codes used against training images.

Usage::

    python benchmarks/bench_learning.py runs/imagenette64-titok runs/imagenette64-vqgan-f8 \\
        --data ../shared/data/imagenette --plot docs/results/imagenette64-learning/curves.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from titok.evaluation.reconstruction import DataSplit, split_batches
from titok.evaluation.token_use import token_use
from titok.metrics import psnr, ssim
from titok.metrics.codebook import codebook_usage
from titok.models.titok import TiTok
from titok.models.vqgan import VQGAN
from titok.training.config import Recipe, load_recipe
from titok.training.tasks.stage1 import load_teacher
from titok.training.tasks.stage2 import Stage2Task

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "learning.json"


def settings(recipe: Recipe) -> dict[str, object]:
    """What tells runs apart: the recipe's model fields, learning rate, schedule, batch and steps."""
    return {
        "model": dict(recipe.model),
        "learning_rate": recipe.optimizer.learning_rate,
        "warmup_steps": recipe.lr_scheduler.warmup_steps,
        "end_lr": recipe.lr_scheduler.end_lr,
        "batch_size": recipe.training.batch_size,
        "max_train_steps": recipe.training.max_train_steps,
    }


class Measured:
    """A run's model, rebuilt from its recipe, and how to measure one of its checkpoints."""

    def __init__(self, recipe: Recipe, run: Path) -> None:
        self.mode = recipe.mode
        self.teacher: VQGAN | None = None
        if recipe.mode == "vqgan":
            self.model: torch.nn.Module = VQGAN(recipe.vqgan_config())
        elif recipe.mode == "single_stage":
            self.model = TiTok(recipe.titok_config(decoder_head="pixels"))
        elif recipe.mode == "stage1":
            self.teacher = load_teacher(recipe)
            codes = self.teacher.config.codebook_size
            self.model = TiTok(recipe.titok_config(decoder_head="proxy", num_proxy_codes=codes))
        elif recipe.mode == "stage2":
            self.model = Stage2Task(recipe).build_model(None)  # type: ignore[arg-type]  # uses no accelerator
        else:
            raise SystemExit(f"{run}: mode {recipe.mode!r} is not measured here")
        self.batch = recipe.training.batch_size
        self.size = recipe.data.image_size or self.model.config.image_size  # type: ignore[union-attr]

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, float | None]:
        """Figures of the loaded weights on ``images`` (N, 3, S, S) in [0, 1]."""
        model = self.model.eval()
        figures: dict[str, float | None] = {"token_sensitivity": None, "mean_image_psnr": None}
        if self.mode == "vqgan":
            ids = torch.cat([model.encode(chunk) for chunk in images.split(100)])  # type: ignore[operator]
            recon = torch.cat([model.decode(chunk) for chunk in ids.split(100)])  # type: ignore[operator]
            figures["codes_used"] = float(ids.unique().numel())
            figures["perplexity"] = codebook_usage(ids, model.config.codebook_size)["perplexity"]  # type: ignore[union-attr]
        elif self.teacher is not None:
            tokens = model.encode(images)  # type: ignore[operator]
            codes = torch.cat([model.decode_proxy_codes(chunk) for chunk in tokens.split(100)])  # type: ignore[operator]
            target = torch.cat([self.teacher.encode(chunk) for chunk in images.split(100)])
            recon = torch.cat([self.teacher.decode(chunk) for chunk in codes.split(100)]).clamp(0.0, 1.0)
            figures["codes_used"] = float(tokens.unique().numel())
            figures["perplexity"] = codebook_usage(tokens, model.codebook_size)["perplexity"]  # type: ignore[arg-type]
            figures["code_accuracy"] = float((codes == target).float().mean())
        else:
            figures = token_use(model, images)  # type: ignore[arg-type]
            recon = model.reconstruct(images)  # type: ignore[operator]
        figures["psnr"] = float(psnr(recon, images).mean())
        figures["ssim"] = float(ssim(recon, images).mean())
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of titok train")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagenette"))
    parser.add_argument("--holdout", type=int, default=500)
    parser.add_argument("--images", type=int, default=500, help="held-out images measured")
    parser.add_argument("--every", type=int, default=1, help="measure every n-th checkpoint (and the last)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=None, help="PNG of PSNR and codes used vs images seen")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    curves = {}
    for run in args.runs:
        recipe = load_recipe(run / "recipe.yaml")
        measured = Measured(recipe, run)
        split = DataSplit(args.data, "val", args.holdout, 0, args.images)
        images = torch.cat([b["image"] for b in split_batches(split, measured.size, 100, progress=False)])
        checkpoints = sorted(run.glob("checkpoint-*"))
        chosen = checkpoints[:: args.every]
        if checkpoints and checkpoints[-1] not in chosen:
            chosen.append(checkpoints[-1])
        history = []
        for ckpt in chosen:
            measured.model.load_state_dict(load_file(ckpt / "model.safetensors"))
            step = int(ckpt.name.split("-")[-1])
            start = time.perf_counter()
            row = {"step": step, "images_seen": step * measured.batch, **measured(images)}
            row["seconds"] = time.perf_counter() - start
            history.append(row)
            print(
                json.dumps(
                    {
                        "run": run.name,
                        **{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()},
                    }
                ),
                flush=True,
            )
        curves[run.name] = history
        results[run.name] = {
            "run": str(run),
            "mode": measured.mode,
            "heldout_images": len(images),
            "image_size": measured.size,
            "settings": settings(recipe),
            "history": history,
            "torch": torch.__version__,
        }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    if args.plot is not None:
        plot(curves, args.plot)


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    from common import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, history in curves.items():
        seen = [row["images_seen"] / 1000 for row in history]
        axes[0].plot(seen, [row["psnr"] for row in history], marker=".", label=name)
        axes[1].plot(seen, [row["codes_used"] for row in history], marker=".", label=name)
        means = [row["mean_image_psnr"] for row in history if row["mean_image_psnr"] is not None]
        if means and "mean image" not in [t.get_text() for t in axes[0].texts]:
            axes[0].axhline(means[0], color="grey", linestyle=":", linewidth=1)
            axes[0].text(0, means[0] + 0.1, "mean image", color="grey", fontsize=8)
    axes[0].set(xlabel="training images (thousands)", ylabel="held-out PSNR (dB)")
    axes[1].set(xlabel="training images (thousands)", ylabel="distinct codes on held-out images")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
