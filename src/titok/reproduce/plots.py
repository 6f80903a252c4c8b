"""The PNG plots of a reproduction report, from the run's results and training logs.

Reconstruction quality, linear-probe accuracy and generation against the number of tokens (one
line per kind of tokenizer), and the tokenizers' training curves. Plots need matplotlib (the
``demo`` extra); without it :func:`write_plots` writes none and the report keeps its tables.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from titok.reproduce.render import Run, find_key, save_figure
from titok.reproduce.stages import TokenizerKind, TokenizerStage, by_kind

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MARKERS = {
    TokenizerKind.TITOK_TWO_STAGE: "o",
    TokenizerKind.TITOK_SINGLE_STAGE: "^",
    TokenizerKind.VQGAN: "s",
}


def _line(kind: TokenizerKind) -> str:
    """Line style of a kind of tokenizer: dashed for the 2D ones."""
    return "--" if kind is TokenizerKind.VQGAN else "-"


def training_curve(run: Run, tokenizer: TokenizerStage, smooth: int = 5) -> tuple[list[float], list[float]]:
    """Training images seen and training-batch PSNR (dB, from the L2 loss on [0, 1] pixels) of ``tokenizer``.

    A running mean over ``smooth`` logged steps; a two-stage TiTok's curve starts after its stage-1
    images. Empty lists when the run has no metrics for it.
    """
    path = run.path(tokenizer.folder, "metrics.jsonl")
    if not path.is_file():
        return [], []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "reconstruction" in r and r["reconstruction"] > 0]
    batch = run.budget.batch_size
    offset = 0 if tokenizer.stage1_folder is None else run.budget.stage1_steps * batch
    images, psnr = [], []
    for i in range(len(rows)):
        window = rows[max(0, i - smooth + 1) : i + 1]
        mse = sum(r["reconstruction"] for r in window) / len(window)
        images.append(offset + rows[i]["step"] * batch)
        psnr.append(-10 * math.log10(mse))
    return images, psnr


def _against_tokens(ax: Axes, title: str | None = None) -> None:
    """Axes of a figure against the number of tokens (log scale)."""
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of tokens")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def _reconstruction(plt: Any, tokenizers: list[TokenizerStage], recon: dict, out: Path) -> str:
    """PSNR, SSIM and rFID against the number of tokens."""
    fid_key = find_key(next(iter(recon.values())), "rFID")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric, label in zip(
        axes,
        ("PSNR", "SSIM", fid_key),
        ("PSNR (dB, higher is better)", "SSIM (higher is better)", f"{fid_key} (lower is better)"),
        strict=True,
    ):
        for kind, members in by_kind(tokenizers):
            ax.plot(
                [t.num_tokens for t in members],
                [recon[t.name][metric] for t in members],
                MARKERS[kind] + _line(kind),
                label=kind.value,
            )
        _against_tokens(ax, label)
    axes[0].legend()
    return save_figure(fig, out / "reconstruction.png")


def _curves(plt: Any, run: Run, tokenizers: list[TokenizerStage], out: Path) -> str:
    """The training-batch PSNR of every tokenizer against the training images it saw."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, members in by_kind(tokenizers):
        for t in members:
            images, psnr = training_curve(run, t)
            if images:
                ax.plot(images, psnr, _line(kind), label=f"{t.name} ({t.num_tokens} tokens)")
    ax.set_xlabel("training images seen")
    ax.set_ylabel("training-batch PSNR (dB)")
    ax.set_title("Training curves (L2 loss of the training batches, running mean)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out / "curves.png")


def _probe(plt: Any, tokenizers: list[TokenizerStage], probe: dict, out: Path) -> str:
    """Linear-probe top-1 (concatenated and mean-pooled tokens) against the number of tokens."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for pool, style in (("concat", "-"), ("mean", ":")):
        for kind, members in by_kind(t for t in tokenizers if t.name in probe):
            ax.plot(
                [t.num_tokens for t in members],
                [probe[t.name][f"top1_{pool}"] for t in members],
                MARKERS[kind] + style,
                label=f"{kind.value} ({pool})",
            )
    _against_tokens(ax)
    ax.set_ylabel("linear-probe top-1")
    ax.legend(fontsize=8)
    return save_figure(fig, out / "probe.png")


def _generation(plt: Any, gen: dict, out: Path) -> str:
    """gFID and images per second of the 1D and the 2D generator against their number of tokens."""
    gfid = find_key(gen["1d"], "gFID")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for which, marker, label in (("1d", "o", "1D TiTok"), ("2d", "s", "2D VQGAN f=16")):
        for ax, metric in zip(axes, (gfid, "images_per_second"), strict=True):
            ax.plot([gen[which]["num_tokens"]], [gen[which][metric]], marker, markersize=9, label=label)
    axes[0].set_ylabel(f"{gfid} (lower is better)")
    axes[1].set_ylabel("images / s (sampling + decoding)")
    for ax in axes:
        ax.set_xlabel("number of tokens")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out / "generation.png")


def write_plots(
    run: Run, tokenizers: list[TokenizerStage], recon: dict, probe: dict, gen: dict | None
) -> list[str]:
    """Write the PNG plots of ``tokenizers`` into ``<run>/results``; returns their file names
    (empty without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out = run.path("results")
    files = [
        _reconstruction(plt, tokenizers, recon, out),
        _curves(plt, run, tokenizers, out),
        _probe(plt, tokenizers, probe, out),
    ]
    if gen:
        files.append(_generation(plt, gen, out))
    return files
