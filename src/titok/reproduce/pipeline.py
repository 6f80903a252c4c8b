"""``titok reproduce imagenette64``: every stage of the paper at 64 px on Imagenette, resumable.

Stages, in order (each writes into ``<run>/<stage>/`` and is skipped once done):

1. ``classifier``: the feature network of the FID-like figures (``titok train classifier``);
   ``vqgan-f8``, ``vqgan-f16``: 2D VQGAN tokenizers (64 and 16 tokens); ``titok-k{K}-single``:
   single-stage TiTok tokenizers (the built-in model's recipe) for every K of the budget. These
   are independent: with ``workers`` > 1 they train side by side in worker processes.
2. ``titok-k{K}-stage1`` then ``titok-k{K}-stage2`` for the budget's two-stage K (the authors'
   recipe, f=8 VQGAN as teacher), if any.
3. ``eval-reconstruction``: PSNR, SSIM, rFID[net], codebook usage of every tokenizer on the
   held-out images; ``eval-probe``: linear-probe top-1 of their frozen tokens.
4. ``tokens-1d`` (the chosen 1D tokenizer, see :func:`choose_generator_tokenizer`), ``tokens-2d`` (f=16):
   pretokenized training images; ``generator-1d``, ``generator-2d``: MaskGIT generators of the
   same size on each (the two pairs side by side with ``workers`` > 1).
5. ``eval-generation``: gFID[net], IS[net], images/s and class agreement of both generators.
6. ``report``: ``report.md`` with tables and PNG plots (:mod:`titok.reproduce.report`).

``state.json`` records the budget, each finished stage and its wall time; running again skips
finished stages and resumes an interrupted training stage from its last checkpoint;
``redo`` (``--redo STAGE``) runs chosen stages again from scratch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from titok.class_names import IMAGENETTE_CLASSES
from titok.errors import ConfigError
from titok.reproduce.budget import IMAGE_SIZE, Budget
from titok.reproduce.parallel import Job
from titok.reproduce.recipes import (
    generator_recipe,
    single_stage_recipe,
    stage1_recipe,
    stage2_recipe,
    vqgan_recipe,
)
from titok.reproduce.render import find_key, save_grid
from titok.reproduce.run_folder import Run, default_data
from titok.reproduce.stages import GENERATOR_2D, TEACHER, TokenizerKind, TokenizerStage
from titok.training.config import Recipe

if TYPE_CHECKING:
    from titok.metrics.feature_stats import FeatureSummary

logger = logging.getLogger("titok.reproduce")


def train_stage(recipe: Recipe, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``recipe`` into its output folder, resuming from the folder's last checkpoint if any:
    the body of every training stage (picklable with ``functools.partial``, for the workers).

    Returns the steps, the step it started from (0, or the checkpoint it resumed), skipped samples
    and ``extra`` (for the stage's record).
    """
    from titok.training import make_task, train
    from titok.training.checkpointing import latest_checkpoint

    resume = latest_checkpoint(recipe.experiment.output_dir) is not None
    result = train(make_task(recipe), resume=resume)
    return {
        "steps": result.step,
        "start_step": result.start_step,
        "skipped": dict(result.skipped),
        **(extra or {}),
    }


def stage_classifier(run: Run) -> dict[str, Any]:
    """Train the feature network of the FID-like figures (and judge of class agreement)."""
    return _classifier_job(run.budget, run.data, run.path("classifier"))


def _classifier_job(b: Budget, data: str, output: Path) -> dict[str, Any]:
    from titok.evaluation.classifier_training import ClassifierTrainingConfig, train_classifier

    config = ClassifierTrainingConfig(
        data=data,
        name="imagenette64-resnet",
        image_size=IMAGE_SIZE,
        holdout=b.holdout,
        holdout_seed=0,
        max_train_images=b.max_train_images,
        max_val_images=b.eval_images,
        num_classes=len(IMAGENETTE_CLASSES),
        epochs=b.classifier_epochs,
    )
    result = train_classifier(config, output, resume=True, progress=False)
    return {"val_top1": result.val_top1}


def choose_generator_tokenizer(recon: dict[str, dict[str, float]]) -> TokenizerStage:
    """The 1D tokenizer of the generator: the lowest rFID[net] among K = 16 and 32 (any K if none).

    ``recon``: reconstruction metrics by tokenizer name (``results/reconstruction.json``).
    """
    scored = [
        (metrics[find_key(metrics, "rFID")], tokenizer)
        for name, metrics in recon.items()
        if not (tokenizer := TokenizerStage.from_name(name)).is_2d
    ]
    if not scored:
        raise ConfigError("no TiTok tokenizer was measured")
    preferred = [s for s in scored if s[1].num_tokens in (16, 32)] or scored
    return min(preferred, key=lambda s: (s[0], s[1].num_tokens, s[1].name))[1]


def stage_eval_reconstruction(run: Run, tokenizers: Sequence[TokenizerStage] | None = None) -> dict[str, Any]:
    """Reconstruction metrics and grids of ``tokenizers`` (default: every one of the run)."""
    tokenizers = list(tokenizers or run.tokenizers())
    net = run.feature_network()
    val = run.val_split(run.budget.eval_images)
    reference = _reference(run, net)
    results = {}
    for tokenizer in tokenizers:
        metrics, originals, recs = _reconstruct(run, run.load_tokenizer(tokenizer), val, net, reference)
        results[tokenizer.name] = metrics
        if tokenizer == tokenizers[0]:
            save_grid(originals, run.path("results", "originals.png"))
        save_grid(recs, run.path("results", f"reconstructions-{tokenizer.name}.png"))
        run.echo(f"  {tokenizer.name}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    run.write_json("reconstruction.json", results)
    return {}


def _reference(run: Run, net):
    from titok.reproduce.measure import real_summary

    return real_summary(net, run.val_split(run.budget.eval_images), IMAGE_SIZE)


def _reconstruct(run: Run, tok, val, net, reference):
    from titok.reproduce.measure import reconstruction_metrics

    return reconstruction_metrics(tok, val, net, reference, IMAGE_SIZE, keep=run.budget.grid_images)


def stage_eval_probe(run: Run, tokenizers: Sequence[TokenizerStage] | None = None) -> dict[str, Any]:
    """Linear probes of ``tokenizers`` (default: every one of the run)."""
    from titok.reproduce.measure import probe_metrics

    train = run.train_split(run.budget.probe_train_images)
    val = run.val_split(run.budget.eval_images)
    results = {}
    for tokenizer in tokenizers or run.tokenizers():
        probe = probe_metrics(run.load_tokenizer(tokenizer), train, val, IMAGE_SIZE, len(IMAGENETTE_CLASSES))
        results[tokenizer.name] = probe
        run.echo(
            f"  {tokenizer.name}: top-1 mean {probe['top1_mean']:.3f}, concat {probe['top1_concat']:.3f}"
        )
    run.write_json("probe.json", results)
    return {}


def generator_tokenizer(run: Run) -> TokenizerStage:
    """The run's 1D tokenizer for the generator, chosen by its measured reconstruction."""
    return run.tokenizer(choose_generator_tokenizer(run.read_json("reconstruction.json")).name)


def recorded_tokenizer(run: Run, which: str) -> TokenizerStage:
    """The tokenizer that stage ``tokens-{which}`` pretokenized with (recorded in ``state.json``)."""
    return run.tokenizer(run.state["stages"][f"tokens-{which}"]["tokenizer"])


def stage_tokens(run: Run, which: str, tokenizer: TokenizerStage | None = None) -> dict[str, Any]:
    """Pretokenize the train split with ``tokenizer`` (default: the chosen 1D tokenizer, or the
    f=16 VQGAN)."""
    from titok.data import DataConfig
    from titok.pretokenize import pretokenize

    if tokenizer is None:
        tokenizer = generator_tokenizer(run) if which == "1d" else GENERATOR_2D
    data = DataConfig(
        path=run.data,
        image_size=IMAGE_SIZE,
        batch_size=50,
        holdout=run.budget.holdout,
        holdout_seed=0,
        split="train",
        max_samples=run.budget.max_train_images,
        require_labels=True,
    )
    export = str(tokenizer.export_dir(run.output))
    pretokenize(run.load_tokenizer(tokenizer), data, run.path(f"tokens-{which}"), export, shard_size=5000)
    return {"tokenizer": tokenizer.name}


def stage_generator(run: Run, which: str) -> Job:
    """The training job of generator ``which`` (picklable), on the tokens of stage ``tokens-{which}``."""
    tokenizer = recorded_tokenizer(run, which)
    recipe = generator_recipe(
        run.budget,
        run.path(f"tokens-{which}"),
        run.path(f"generator-{which}"),
        None if tokenizer.is_2d else str(tokenizer.export_dir(run.output)),
        len(IMAGENETTE_CLASSES),
    )
    return partial(train_stage, recipe, {"tokenizer": tokenizer.name})


def stage_eval_generation(
    run: Run,
    generators: Sequence[str] = ("1d", "2d"),
    decoders: Mapping[str, TokenizerStage] | None = None,
) -> dict[str, Any]:
    """Generation metrics of ``generators`` ("1d", "2d") into ``results/generation.json``.

    ``decoders``: extra entries ``{key: tokenizer}``, each the 1D generator's samples decoded by
    that tokenizer instead of the one it was trained on; it must read the same tokens (a
    decoder-fine-tuned copy of it).
    """
    from titok.reproduce.measure import real_class_agreement

    net = run.feature_network()
    reference = _reference(run, net)
    real_agreement = real_class_agreement(net, run.val_split(run.budget.eval_images), IMAGE_SIZE)
    results = {which: measure_generator(run, which, net, reference, real_agreement) for which in generators}
    for key, decoder in (decoders or {}).items():
        results[key] = measure_generator(run, "1d", net, reference, real_agreement, decoder=decoder, key=key)
    run.write_json("generation.json", results)
    return {}


#: The generator config fields that set how it samples (recorded beside its figures).
SAMPLING_SETTINGS = ("num_steps", "guidance_scale", "guidance_schedule", "randomize_temperature")


def measure_generator(
    run: Run,
    which: str,
    net: torch.nn.Module,
    reference: FeatureSummary,
    real_agreement: float,
    decoder: TokenizerStage | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """gFID, IS, class agreement and speed of generator ``which``; its samples as a grid, a row per
    class, in ``results/samples-{key}.png`` (``key`` defaults to ``which``). ``decoder``: the
    tokenizer that decodes its tokens (default: the one it was trained on)."""
    from titok.models.generator import Generator
    from titok.reproduce.measure import generation_metrics_for, generation_speed

    b, classes = run.budget, len(IMAGENETTE_CLASSES)
    tokenizer = decoder or recorded_tokenizer(run, which)
    tok = run.load_tokenizer(tokenizer)
    gen = Generator.from_pretrained(run.path(f"generator-{which}", "export")).eval()
    metrics, images = generation_metrics_for(gen, tok, net, reference, b.generated_images, classes)
    results = {
        "tokenizer": tokenizer.name,
        "num_tokens": tok.num_tokens,
        **metrics,
        "class_agreement_real_heldout": real_agreement,
        **generation_speed(gen, tok, classes, b.speed_batch, b.speed_runs),
        "generator_parameters": float(sum(p.numel() for p in gen.parameters())),
        "sampling": {k: getattr(gen.config, k) for k in SAMPLING_SETTINGS},
    }
    per_class = max(1, min(8, b.generated_images // classes))
    order = torch.cat([torch.arange(c, len(images), classes)[:per_class] for c in range(classes)])
    save_grid(images[order], run.path("results", f"samples-{key or which}.png"), nrow=per_class)
    run.echo(f"  {key or which}: " + ", ".join(f"{k} {v}" for k, v in results.items()))
    return results


def stage_report(run: Run) -> dict[str, Any]:
    """Write ``report.md`` (:mod:`titok.reproduce.report`)."""
    from titok.reproduce.report import write_report

    write_report(run)
    return {}


def reproduce_imagenette64(
    output: str | Path,
    budget: Budget,
    data: str | None = None,
    echo=print,
    redo: list[str] | None = None,
    latent_centering: bool = False,
    workers: int = 1,
) -> Path:
    """Run (or continue) every stage; returns the report path.

    ``redo``: stages to run again; ``latent_centering``: the two-stage TiTok variant of :class:`Run`;
    ``workers``: processes for the independent training stages (1: all in this process).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    run = Run(Path(output), budget, data or default_data(), echo, latent_centering)
    if redo:
        run.redo(redo)
    start = time.perf_counter()
    try:
        _all_stages(run, workers)
    finally:  # the run's wall time, summed over calls (stages in workers overlap)
        run.state["wall_seconds"] = run.state.get("wall_seconds", 0.0) + time.perf_counter() - start
        run.save()
    # The report is rewritten on every call (it is cheap and reflects the latest state).
    start = time.perf_counter()
    stage_report(run)
    run.echo(f"[done] report in {time.perf_counter() - start:.0f} s: {run.path('report.md')}")
    return run.path("report.md")


def _all_stages(run: Run, workers: int) -> None:
    """Every stage of the module docstring in order, skipping those done."""
    b, data = run.budget, run.data
    catalog = run.tokenizers()
    singles = [t for t in catalog if t.kind is TokenizerKind.TITOK_SINGLE_STAGE]
    independent: list[tuple[str, Job]] = [
        # the longest first, so that the workers finish together
        *[(t.folder, _training_job(run, t)) for t in catalog if t.is_2d],
        *[
            (t.folder, _training_job(run, t))
            for t in sorted(singles, key=lambda t: t.num_tokens, reverse=True)
        ],
        ("classifier", partial(_classifier_job, b, data, run.path("classifier"))),
    ]
    run.stages(independent, workers)
    teacher = TEACHER.export_dir(run.output)
    for t in catalog:
        if t.stage1_folder is None:  # not a two-stage TiTok
            continue
        s1, s2 = run.path(t.stage1_folder), run.path(t.folder)
        recipe = stage1_recipe(b, data, t.num_tokens, teacher, s1, run.latent_centering)
        run.stage(t.stage1_folder, partial(train_stage, recipe))
        run.stage(
            t.folder, lambda s1=s1, s2=s2: train_stage(stage2_recipe(b, data, s1 / "export", teacher, s2))
        )
    run.stage("eval-reconstruction", lambda: stage_eval_reconstruction(run))
    run.stage("eval-probe", lambda: stage_eval_probe(run))
    for which in ("1d", "2d"):
        run.stage(f"tokens-{which}", lambda which=which: stage_tokens(run, which))
    run.stages([(f"generator-{w}", stage_generator(run, w)) for w in ("1d", "2d")], workers)
    run.stage("eval-generation", lambda: stage_eval_generation(run))


def _training_job(run: Run, tokenizer: TokenizerStage) -> Job:
    """The picklable training job of a one-stage tokenizer: a VQGAN or a single-stage TiTok."""
    b, data, output = run.budget, run.data, run.path(tokenizer.folder)
    if tokenizer.factor is not None:
        return partial(train_stage, vqgan_recipe(b, data, tokenizer.factor, output))
    return partial(train_stage, single_stage_recipe(b, data, tokenizer.num_tokens, output))
