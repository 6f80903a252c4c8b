"""``report.md`` of a reproduction run: tables, PNG plots and image grids, all from its results.

Every figure in the report is read from the run folder (``state.json`` and ``results/*.json``);
nothing is typed in. Plots need matplotlib (the ``demo`` extra); without it the report says so
and keeps the tables.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any, Protocol

import torch

from titok.images import tensor_to_pil
from titok.reproduce.budget import Budget, token_count, training_folder
from titok.training.monitor import image_grid


class Run(Protocol):
    """What the report reads of a run (:class:`titok.reproduce.run_folder.Run`): its folder and state."""

    budget: Budget
    state: dict[str, Any]

    def path(self, *parts: str) -> Path: ...


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """Images (N, 3, H, W) in [0, 1] as a PNG grid of rows of ``nrow``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [images[i : i + nrow] for i in range(0, len(images), nrow)]
    if len(rows) > 1 and len(rows[-1]) < nrow:
        pad = torch.ones(nrow - len(rows[-1]), *images.shape[1:])
        rows[-1] = torch.cat([rows[-1], pad])
    tensor_to_pil(image_grid(rows)).save(path)
    return path


def sampling_text(sampling: dict[str, Any] | None) -> str:
    """``sampling`` (as recorded by :func:`measure_generator`) in words; "" if not recorded."""
    if not sampling:
        return ""
    return (
        f"{sampling['num_steps']} steps, guidance scale {sampling['guidance_scale']:g} "
        f"({sampling['guidance_schedule']}), temperature {sampling['randomize_temperature']:g}"
    )


def _sampling(gen: dict[str, Any]) -> str:
    text = sampling_text(gen.get("sampling"))
    return f" ({text})" if text else ""


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _kind(name: str) -> str:
    if name.startswith("vqgan"):
        return "2D VQGAN"
    return "1D TiTok single-stage" if name.endswith("-single") else "1D TiTok two-stage"


def training_curve(run: Run, name: str, smooth: int = 5) -> tuple[list[float], list[float]]:
    """Training images seen and training-batch PSNR (dB, from the L2 loss on [0, 1] pixels) of ``name``.

    A running mean over ``smooth`` logged steps; a two-stage TiTok's curve starts after its stage-1
    images. Empty lists when the run has no metrics for it.
    """
    folder = training_folder(name)
    path = run.path(folder, "metrics.jsonl")
    if not path.is_file():
        return [], []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "reconstruction" in r and r["reconstruction"] > 0]
    batch = run.budget.batch_size
    offset = 0 if folder == name else run.budget.stage1_steps * batch
    images, psnr = [], []
    for i in range(len(rows)):
        window = rows[max(0, i - smooth + 1) : i + 1]
        mse = sum(r["reconstruction"] for r in window) / len(window)
        images.append(offset + rows[i]["step"] * batch)
        psnr.append(-10 * math.log10(mse))
    return images, psnr


def _tokens(name: str) -> int:
    if name == "vqgan-f8":
        return 64
    if name == "vqgan-f16":
        return 16
    return token_count(name)


KIND_ORDER = ("1D TiTok two-stage", "1D TiTok single-stage", "2D VQGAN")
MARKERS = {"1D TiTok two-stage": "o", "1D TiTok single-stage": "^", "2D VQGAN": "s"}
STAGE_ORDER = (
    "classifier",
    "vqgan",
    "titok",
    "eval-reconstruction",
    "eval-probe",
    "tokens-1d",
    "generator-1d",
    "tokens-2d",
    "generator-2d",
    "eval-generation",
)


def _series(names: list[str]) -> list[tuple[str, list[str]]]:
    """Tokenizer names grouped by kind (plot lines), each sorted by token count."""
    kinds = sorted({_kind(n) for n in names}, key=KIND_ORDER.index)
    return [(k, sorted((n for n in names if _kind(n) == k), key=_tokens)) for k in kinds]


def _stage_rank(name: str) -> tuple[int, int]:
    """Pipeline order of a stage name (the state keeps the order in which stages last ran)."""
    rank = next((i for i, prefix in enumerate(STAGE_ORDER) if name.startswith(prefix)), len(STAGE_ORDER))
    single = 1 if name.endswith("-single") else 0
    return rank, single


def _key(metrics: dict[str, float], prefix: str) -> str:
    return next(k for k in metrics if k.startswith(prefix))


def _save(fig, path: Path) -> str:
    """Write the matplotlib figure ``fig`` to ``path`` (PNG), close it, return the file name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _plots(run: Run, recon: dict, probe: dict, gen: dict | None) -> list[str]:
    """Write the PNG plots; returns their file names (empty without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out = run.path("results")
    names = list(recon)
    series = _series(names)
    files = []

    fid_key = _key(next(iter(recon.values())), "rFID")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric, label in zip(
        axes,
        ("PSNR", "SSIM", fid_key),
        ("PSNR (dB, higher is better)", "SSIM (higher is better)", f"{fid_key} (lower is better)"),
        strict=True,
    ):
        for kind, members in series:
            ax.plot(
                [_tokens(n) for n in members],
                [recon[n][metric] for n in members],
                MARKERS[kind] + ("--" if kind == "2D VQGAN" else "-"),
                label=kind,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("number of tokens")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend()
    files.append(_save(fig, out / "reconstruction.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, members in series:
        for n in members:
            images, psnr = training_curve(run, n)
            if images:
                ax.plot(images, psnr, "--" if kind == "2D VQGAN" else "-", label=f"{n} ({_tokens(n)} tokens)")
    ax.set_xlabel("training images seen")
    ax.set_ylabel("training-batch PSNR (dB)")
    ax.set_title("Training curves (L2 loss of the training batches, running mean)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    files.append(_save(fig, out / "curves.png"))

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for pool, style in (("concat", "-"), ("mean", ":")):
        for kind, members in _series([n for n in names if n in probe]):
            ax.plot(
                [_tokens(n) for n in members],
                [probe[n][f"top1_{pool}"] for n in members],
                MARKERS[kind] + style,
                label=f"{kind} ({pool})",
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of tokens")
    ax.set_ylabel("linear-probe top-1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    files.append(_save(fig, out / "probe.png"))

    if gen:
        gfid = _key(gen["1d"], "gFID")
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for which, marker, label in (("1d", "o", "1D TiTok"), ("2d", "s", "2D VQGAN f=16")):
            axes[0].plot([gen[which]["num_tokens"]], [gen[which][gfid]], marker, markersize=9, label=label)
            axes[1].plot(
                [gen[which]["num_tokens"]],
                [gen[which]["images_per_second"]],
                marker,
                markersize=9,
                label=label,
            )
        axes[0].set_ylabel(f"{gfid} (lower is better)")
        axes[1].set_ylabel("images / s (sampling + decoding)")
        for ax in axes:
            ax.set_xlabel("number of tokens")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        files.append(_save(fig, out / "generation.png"))
    return files


def write_report(run: Run) -> Path:
    """Write ``<run>/report.md`` from the run's results."""
    state = run.state
    budget = state["budget"]
    centering = state.get("latent_centering", False)
    results = run.path("results")
    recon = json.loads((results / "reconstruction.json").read_text())
    probe = json.loads((results / "probe.json").read_text())
    gen_path = results / "generation.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else None
    plots = _plots(run, recon, probe, gen)
    stages = state["stages"]
    total = sum(s["seconds"] for s in stages.values())
    names = sorted(recon, key=lambda n: (KIND_ORDER.index(_kind(n)), _tokens(n)))
    fid_key = _key(next(iter(recon.values())), "rFID")
    net = fid_key[len("rFID[") : -1]
    limit = (
        ""
        if budget["max_train_images"] is None
        else f"; first {budget['max_train_images']} training images only"
    )

    md = [
        "# TiTok in miniature: Imagenette at 64x64 on a CPU",
        "",
        f"Budget **{budget['name']}**; data `{state['data']}` (train split, {budget['holdout']} images held out "
        f"with seed 0 for validation{limit}). "
        + (
            f"Wall time {state['wall_seconds'] / 60:.1f} min; the stages' own times add up to {total / 60:.1f} min "
            "(stages in worker processes overlap). "
            if "wall_seconds" in state
            else f"Total wall time {total / 60:.1f} min. "
        )
        + f"On {platform.machine()} (torch threads of each stage in the stages table, where recorded), "
        f"torch {torch.__version__}. Reproduce with `titok reproduce imagenette64 -o RUN --budget {budget['name']}"
        f"{' --latent-centering' if centering else ''}`."
        + (
            " TiTok stages with latent centering (not the authors' recipe) and without weight averaging."
            if centering
            else ""
        ),
        "",
        "## Stages",
        "",
        _table(
            ["stage", "wall time (s)", "notes"],
            [
                [k, f"{v['seconds']:.0f}", _stage_note(v)]
                for k, v in sorted(stages.items(), key=lambda item: _stage_rank(item[0]))
            ],
        ),
        "",
        f"Tokenizer budget: every tokenizer sees {run.budget.tokenizer_images} training images, "
        f"{budget['tokenizer_steps']} steps at batch {budget['batch_size']} with a "
        f"{run.budget.warmup_steps(budget['tokenizer_steps'])}-step warm-up. Single-stage TiTok: the built-in "
        "model's recipe `imagenette64_titok` (straight to pixels, L2, latent centering and dead-code restarts)"
        + (
            f"; two-stage TiTok (the authors' recipe): {budget['stage1_steps']} steps of stage 1 on the f=8 VQGAN's "
            f"codes, then {budget['tokenizer_steps'] - budget['stage1_steps']} of stage 2"
            if run.budget.two_stage_token_counts
            else ""
        )
        + (
            f". VQGANs{' and stage 2' if run.budget.two_stage_token_counts else ''}: L2, GAN from step "
            f"{budget['discriminator_start']} (LPIPS when its weights are present)"
            if run.budget.adversarial
            else ". VQGANs: L2 alone, like the TiTok (PSNR is the target at this scale; no GAN)"
        )
        + f". Generators: {budget['generator_steps']} steps at batch {budget['generator_batch']}. "
        "Stages with a `threads` note of 1 trained side by side in worker processes (`--workers`), one core each.",
        "",
        "## Reconstruction",
        "",
        f"On the first {int(next(iter(recon.values()))['num_images'])} held-out images. {fid_key} is a Frechet distance "
        f"in the feature space of the run's own classifier `{net}` (val top-1 "
        f"{_fmt(stages.get('classifier', {}).get('val_top1', float('nan')))}), not Inception FID.",
        "",
        _table(
            ["tokenizer", "kind", "tokens", "PSNR", "SSIM", fid_key, "codes used", "code perplexity"],
            [
                [
                    n,
                    _kind(n),
                    _tokens(n),
                    recon[n]["PSNR"],
                    recon[n]["SSIM"],
                    recon[n][fid_key],
                    recon[n]["codebook_used"],
                    recon[n]["codebook_perplexity"],
                ]
                for n in names
            ],
        ),
        "",
    ]
    if "reconstruction.png" in plots:
        md += ["![reconstruction vs tokens](results/reconstruction.png)", ""]
    if "curves.png" in plots:
        md += ["![training curves](results/curves.png)", ""]
    md += ["Held-out originals (top) and reconstructions:", "", "![originals](results/originals.png)", ""]
    md += [f"{n}:\n\n![{n}](results/reconstructions-{n}.png)\n" for n in names]
    md += [
        "## Linear probing of the frozen tokens",
        "",
        "Features: the tokens before quantization (TiTok: the K latent tokens; VQGAN: the encoder's grid), "
        "mean-pooled or concatenated; a linear classifier (AdamW, 100 epochs) trained on "
        f"{int(next(iter(probe.values()))['num_train_images'])} training images, top-1 on "
        f"{int(next(iter(probe.values()))['num_val_images'])} held-out images.",
        "",
        _table(
            ["tokenizer", "kind", "tokens", "feature dim", "top-1 (concat)", "top-1 (mean)"],
            [
                [
                    n,
                    _kind(n),
                    _tokens(n),
                    int(probe[n]["feature_dim"]),
                    probe[n]["top1_concat"],
                    probe[n]["top1_mean"],
                ]
                for n in names
            ],
        ),
        "",
    ]
    if "probe.png" in plots:
        md += ["![probe vs tokens](results/probe.png)", ""]
    if gen:
        gfid = _key(gen["1d"], "gFID")
        is_key = _key(gen["1d"], "IS")
        md += [
            "## Class-conditional generation",
            "",
            f"MaskGIT generators of the same size ({int(gen['1d']['generator_parameters']):,} parameters) on the "
            f"1D tokens of `{gen['1d']['tokenizer']}` (the 1D tokenizer with the lowest {fid_key} among K = 16 and 32) "
            "and on the "
            f"2D tokens of `{gen['2d']['tokenizer']}`. {int(gen['1d']['num_images'])} class-balanced samples each "
            f"with the generator's default sampling settings{_sampling(gen['1d'])}; FID against the held-out "
            "images. Speed: sampling "
            f"plus decoding a batch of {int(gen['1d']['batch_size'])} on this CPU (median of timed runs). "
            "Class agreement: the share of samples that the run's classifier assigns to the requested class "
            "(chance 10%; the same classifier on the real held-out images: "
            f"{_fmt(gen['1d'].get('class_agreement_real_heldout', float('nan')))}).",
            "",
            _table(
                ["tokens", "tokenizer", "count", gfid, is_key, "class agreement", "images / s"],
                [
                    [
                        w.upper(),
                        gen[w]["tokenizer"],
                        gen[w]["num_tokens"],
                        gen[w][gfid],
                        gen[w][is_key],
                        gen[w].get("class_agreement", float("nan")),
                        gen[w]["images_per_second"],
                    ]
                    for w in ("1d", "2d")
                ],
            ),
            "",
        ]
        if "generation.png" in plots:
            md += ["![generation](results/generation.png)", ""]
        md += [
            "Samples, one row per class (1D, then 2D):",
            "",
            "![1D samples](results/samples-1d.png)",
            "",
            "![2D samples](results/samples-2d.png)",
            "",
        ]
    if not plots:
        md += ["(matplotlib is not installed: `pip install titok[demo]` for the plots.)", ""]
    md += [
        "## What these figures can and cannot say",
        "",
        "- Small scale: 64 px images, 10 classes, a few thousand training images and minutes of CPU training per "
        "model. The models are far from converged, so the figures compare tokenizers trained with the same small "
        "budget; they do not predict ImageNet-scale numbers.",
        f"- `{fid_key}`, `{'gFID' if gen else 'FID'}` and IS here use a small classifier trained on the same data as the "
        "feature network: they rank models within this report and are never comparable to Inception FID/IS.",
        "- FID over a few hundred images is biased upwards and noisy; differences of a few units may not be significant.",
        "- Each figure comes from one run with seed 0: no error bars.",
        "",
    ]
    path = run.path("report.md")
    path.write_text("\n".join(md))
    return path


def _stage_note(entry: dict[str, Any]) -> str:
    notes = [
        f"{k} {_fmt(v)}"
        for k, v in entry.items()
        if k not in ("seconds", "done", "skipped") and not isinstance(v, dict)
    ]
    if not entry.get("done"):
        notes.append("not finished")
    return ", ".join(notes)
