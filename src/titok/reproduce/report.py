"""``report.md`` of a reproduction run: tables, PNG plots and image grids, all from its results.

Every figure in the report is read from the run folder (``state.json`` and ``results/*.json``);
nothing is typed in. The report is a title and five sections, each written by its own function
from the same :class:`Results`; the plots are :mod:`titok.reproduce.plots`' (they need
matplotlib, the ``demo`` extra: without it the report says so and keeps the tables).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from titok.reproduce.plots import write_plots
from titok.reproduce.render import (
    Run,
    feature_network,
    find_key,
    fmt,
    image,
    sampling_text,
    section,
    table,
    write_markdown,
)
from titok.reproduce.stages import TokenizerKind, TokenizerStage, by_kind, find_tokenizer, tokenizer_catalog

#: The order of the stages table: a tokenizer's training stages stand under its kind (in the
#: order they last ran), every other stage under its name; stages not listed come last.
STAGE_ORDER: tuple[str | TokenizerKind, ...] = (
    "classifier",
    TokenizerKind.VQGAN,
    TokenizerKind.TITOK_TWO_STAGE,
    TokenizerKind.TITOK_SINGLE_STAGE,
    "eval-reconstruction",
    "eval-probe",
    "tokens-1d",
    "generator-1d",
    "tokens-2d",
    "generator-2d",
    "eval-generation",
)


@dataclass(frozen=True)
class Results:
    """What the report shows of a run: its measurements and the tokenizers measured.

    Attributes:
        recon, probe, gen: ``results/reconstruction.json``, ``probe.json`` and ``generation.json``
            (None before generation was measured).
        tokenizers: the measured tokenizers, grouped by kind and sorted by token count.
    """

    recon: dict[str, dict[str, Any]]
    probe: dict[str, dict[str, Any]]
    gen: dict[str, dict[str, Any]] | None
    tokenizers: list[TokenizerStage]

    @property
    def fid_key(self) -> str:
        """The rFID key of the reconstruction results, ``rFID[<feature network>]``."""
        return find_key(next(iter(self.recon.values())), "rFID")


def read_results(run: Run) -> Results:
    """The run's results files and the tokenizers they measured."""
    folder = run.path("results")
    recon = json.loads((folder / "reconstruction.json").read_text())
    probe = json.loads((folder / "probe.json").read_text())
    gen_path = folder / "generation.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else None
    catalog = tokenizer_catalog(run.budget)
    measured = [find_tokenizer(catalog, name) for name in recon]
    tokenizers = [t for _, group in by_kind(measured) for t in group]
    return Results(recon, probe, gen, tokenizers)


def write_report(run: Run) -> Path:
    """Write ``<run>/report.md`` from the run's results."""
    r = read_results(run)
    plots = write_plots(run, r.tokenizers, r.recon, r.probe, r.gen)
    lines = [
        *_title(run),
        *_stages(run),
        *_reconstruction(run, r, plots),
        *_probing(r, plots),
        *(_generation(r, r.gen, plots) if r.gen else []),
        *([] if plots else ["(matplotlib is not installed: `pip install titok[demo]` for the plots.)", ""]),
        *_caveats(r),
    ]
    return write_markdown(run.path("report.md"), lines)


def _title(run: Run) -> list[str]:
    """The title and what the run was: budget, data, wall time, machine, the command."""
    b, state = run.budget, run.state
    centering = state.get("latent_centering", False)
    total = sum(s["seconds"] for s in state["stages"].values())
    limit = "" if b.max_train_images is None else f"; first {b.max_train_images} training images only"
    if "wall_seconds" in state:
        wall = (
            f"Wall time {state['wall_seconds'] / 60:.1f} min; the stages' own times add up to {total / 60:.1f} min "
            "(stages in worker processes overlap). "
        )
    else:
        wall = f"Total wall time {total / 60:.1f} min. "
    return section(
        "TiTok in miniature: Imagenette at 64x64 on a CPU",
        f"Budget **{b.name}**; data `{state['data']}` (train split, {b.holdout} images held out "
        f"with seed 0 for validation{limit}). "
        + wall
        + f"On {platform.machine()} (torch threads of each stage in the stages table, where recorded), "
        f"torch {torch.__version__}. Reproduce with `titok reproduce imagenette64 -o RUN --budget {b.name}"
        f"{' --latent-centering' if centering else ''}`."
        + (
            " TiTok stages with latent centering (not the authors' recipe) and without weight averaging."
            if centering
            else ""
        ),
        level=1,
    )


def _stages(run: Run) -> list[str]:
    """Each stage's wall time and record, and what every model was trained for."""
    b = run.budget
    stages = run.state["stages"]
    kinds = {stage: t.kind for t in tokenizer_catalog(b) for stage in t.training_stages}

    def rank(stage: str) -> int:
        key = kinds.get(stage, stage)
        return STAGE_ORDER.index(key) if key in STAGE_ORDER else len(STAGE_ORDER)

    rows = [
        [k, f"{v['seconds']:.0f}", _stage_note(v)]
        for k, v in sorted(stages.items(), key=lambda kv: rank(kv[0]))
    ]
    two_stage = bool(b.two_stage_token_counts)
    budget = (
        f"Tokenizer budget: every tokenizer sees {b.tokenizer_images} training images, "
        f"{b.tokenizer_steps} steps at batch {b.batch_size} with a "
        f"{b.warmup_steps(b.tokenizer_steps)}-step warm-up. Single-stage TiTok: the built-in "
        "model's recipe `imagenette64_titok` (straight to pixels, L2, latent centering and dead-code restarts)"
        + (
            f"; two-stage TiTok (the authors' recipe): {b.stage1_steps} steps of stage 1 on the f=8 VQGAN's "
            f"codes, then {b.stage2_steps} of stage 2"
            if two_stage
            else ""
        )
        + (
            f". VQGANs{' and stage 2' if two_stage else ''}: L2, GAN from step "
            f"{b.discriminator_start} (LPIPS when its weights are present)"
            if b.adversarial
            else ". VQGANs: L2 alone, like the TiTok (PSNR is the target at this scale; no GAN)"
        )
        + f". Generators: {b.generator_steps} steps at batch {b.generator_batch}. "
        "Stages with a `threads` note of 1 trained side by side in worker processes (`--workers`), one core each."
    )
    return section("Stages", table(["stage", "wall time (s)", "notes"], rows), budget)


def _stage_note(entry: dict[str, Any]) -> str:
    """A stage's record in words (steps, start step, tokenizer, ...), and whether it is unfinished."""
    notes = [
        f"{k} {fmt(v)}"
        for k, v in entry.items()
        if k not in ("seconds", "done", "skipped") and not isinstance(v, dict)
    ]
    if not entry.get("done"):
        notes.append("not finished")
    return ", ".join(notes)


def _reconstruction(run: Run, r: Results, plots: list[str]) -> list[str]:
    """PSNR, SSIM, rFID and codebook use of every tokenizer, with its plots and grids."""
    fid_key = r.fid_key
    val_top1 = run.state["stages"].get("classifier", {}).get("val_top1", float("nan"))
    intro = (
        f"On the first {int(next(iter(r.recon.values()))['num_images'])} held-out images. {fid_key} is a "
        f"Frechet distance in the feature space of the run's own classifier `{feature_network(fid_key)}` "
        f"(val top-1 {fmt(val_top1)}), not Inception FID."
    )
    header = ["tokenizer", "kind", "tokens", "PSNR", "SSIM", fid_key, "codes used", "code perplexity"]
    rows = [
        [t.name, t.label, t.num_tokens]
        + [r.recon[t.name][k] for k in ("PSNR", "SSIM", fid_key, "codebook_used", "codebook_perplexity")]
        for t in r.tokenizers
    ]
    grids = [block for t in r.tokenizers for block in (f"{t.name}:", _grid(t))]
    return section(
        "Reconstruction",
        intro,
        table(header, rows),
        _plot(plots, "reconstruction.png", "reconstruction vs tokens"),
        _plot(plots, "curves.png", "training curves"),
        "Held-out originals (top) and reconstructions:",
        image("originals", "results/originals.png"),
        *grids,
    )


def _plot(plots: list[str], name: str, alt: str) -> str | None:
    """The image of plot ``name`` if it was written (None: left out)."""
    return image(alt, f"results/{name}") if name in plots else None


def _grid(tokenizer: TokenizerStage) -> str:
    """The image of a tokenizer's reconstructions of the held-out images."""
    return image(tokenizer.name, f"results/reconstructions-{tokenizer.name}.png")


def _probing(r: Results, plots: list[str]) -> list[str]:
    """Linear-probe top-1 of every tokenizer's frozen tokens."""
    first = next(iter(r.probe.values()))
    intro = (
        "Features: the tokens before quantization (TiTok: the K latent tokens; VQGAN: the encoder's grid), "
        "mean-pooled or concatenated; a linear classifier (AdamW, 100 epochs) trained on "
        f"{int(first['num_train_images'])} training images, top-1 on {int(first['num_val_images'])} held-out images."
    )
    header = ["tokenizer", "kind", "tokens", "feature dim", "top-1 (concat)", "top-1 (mean)"]
    rows = [
        [t.name, t.label, t.num_tokens, int(p["feature_dim"]), p["top1_concat"], p["top1_mean"]]
        for t in r.tokenizers
        for p in [r.probe[t.name]]
    ]
    return section(
        "Linear probing of the frozen tokens",
        intro,
        table(header, rows),
        _plot(plots, "probe.png", "probe vs tokens"),
    )


def _generation(r: Results, gen: dict[str, dict[str, Any]], plots: list[str]) -> list[str]:
    """gFID, IS, class agreement and speed of the 1D and the 2D generator, with their samples."""
    one = gen["1d"]
    gfid, is_key = find_key(one, "gFID"), find_key(one, "IS")
    sampling = sampling_text(one.get("sampling"))
    intro = (
        f"MaskGIT generators of the same size ({int(one['generator_parameters']):,} parameters) on the "
        f"1D tokens of `{one['tokenizer']}` (the 1D tokenizer with the lowest {r.fid_key} among K = 16 and 32) "
        f"and on the 2D tokens of `{gen['2d']['tokenizer']}`. {int(one['num_images'])} class-balanced samples each "
        f"with the generator's default sampling settings{f' ({sampling})' if sampling else ''}; FID against the "
        "held-out images. Speed: sampling "
        f"plus decoding a batch of {int(one['batch_size'])} on this CPU (median of timed runs). "
        "Class agreement: the share of samples that the run's classifier assigns to the requested class "
        "(chance 10%; the same classifier on the real held-out images: "
        f"{fmt(one.get('class_agreement_real_heldout', float('nan')))})."
    )
    header = ["tokens", "tokenizer", "count", gfid, is_key, "class agreement", "images / s"]
    rows = [
        [w.upper(), g["tokenizer"], g["num_tokens"], g[gfid], g[is_key]]
        + [g.get("class_agreement", float("nan")), g["images_per_second"]]
        for w in ("1d", "2d")
        for g in [gen[w]]
    ]
    return section(
        "Class-conditional generation",
        intro,
        table(header, rows),
        _plot(plots, "generation.png", "generation"),
        "Samples, one row per class (1D, then 2D):",
        image("1D samples", "results/samples-1d.png"),
        image("2D samples", "results/samples-2d.png"),
    )


def _caveats(r: Results) -> list[str]:
    """What the figures of so small a run can and cannot say."""
    bullets = [
        "- Small scale: 64 px images, 10 classes, a few thousand training images and minutes of CPU training per "
        "model. The models are far from converged, so the figures compare tokenizers trained with the same small "
        "budget; they do not predict ImageNet-scale numbers.",
        f"- `{r.fid_key}`, `{'gFID' if r.gen else 'FID'}` and IS here use a small classifier trained on the same "
        "data as the feature network: they rank models within this report and are never comparable to Inception "
        "FID/IS.",
        "- FID over a few hundred images is biased upwards and noisy; differences of a few units may not be significant.",
        "- Each figure comes from one run with seed 0: no error bars.",
    ]
    return section("What these figures can and cannot say", "\n".join(bullets))
