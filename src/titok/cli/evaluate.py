"""``titok eval ...``: quality of tokenizers and generators from the command line.

Commands (``eval_app`` is mounted by :mod:`titok.cli.app`; throughput is ``titok bench``,
:mod:`titok.cli.bench`; the offline feature network is ``titok train classifier``)::

    titok eval reconstruction --model M --data D [--split val --holdout 500] [--max-images N]
        [--feature-net NET] [--json-out FILE]
    titok eval generation --model M --generator G --num N (--ref-stats FILE.npz | --ref-data D)
        [--feature-net NET] [--samples-out samples.npz] [--json-out FILE]
    titok eval probe --model M --data D [--val-data D2 | --holdout 500] [--pool mean|concat]
    titok eval reference-stats --data D --image-size S [--feature-net NET] --out FILE.npz

``--feature-net`` is ``inception`` (default; the standard FID Inception-v3, weights from
``--inception-weights`` or the torch hub cache), ``inception-tf``, an Inception weights file, or a
classifier folder from ``titok train classifier``. FID and IS are always labelled with the
network's name (``rFID[imagenette64-resnet]``) and statistics of another network are refused.

Results are printed as a table and, with ``--json-out FILE``, written as JSON:
``{"command", "model", "data", "feature_network", "metrics": {...}, ...}``.
Data options select a split (:class:`titok.evaluation.reconstruction.DataSplit`): ``--split
all|train|val`` with ``--holdout N --holdout-seed S`` (val = the N held-out images, the same in
every run), ``--max-images N`` the first N of the split.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
import typer

from titok.cli.options import (
    BatchOpt,
    DataOpt,
    DeviceOpt,
    DtypeOpt,
    GeneratorOpt,
    GeneratorPresetOpt,
    GuidanceOpt,
    HoldoutSeedOpt,
    JsonOutOpt,
    ModelOpt,
    NumStepsOpt,
    PresetOpt,
    TeacherOpt,
    WorkersOpt,
    load_teacher,
    parse_device,
    parse_dtype,
    resolve_generator,
    resolve_model,
    resolve_reconstruction_model,
    sampling_settings,
    write_json,
)
from titok.errors import ConfigError

if TYPE_CHECKING:
    from titok.evaluation.reconstruction import DataSplit

eval_app = typer.Typer(
    name="eval",
    help="Evaluate tokenizers and generators: rFID/PSNR/SSIM, gFID/IS, linear probe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# ---------------------------------------------------------------------------------------- options

SplitOpt = Annotated[
    str, typer.Option("--split", help="all, train (minus the holdout) or val (the holdout).")
]
HoldoutOpt = Annotated[int, typer.Option("--holdout", min=0, help="Images held out as the val split.")]
MaxImagesOpt = Annotated[int | None, typer.Option("--max-images", min=1, help="First N images of the split.")]
FeatureNetOpt = Annotated[
    str,
    typer.Option(
        "--feature-net",
        help="inception, inception-tf, Inception weights file, or classifier folder (FID/IS).",
    ),
]
InceptionWeightsOpt = Annotated[
    Path | None, typer.Option("--inception-weights", help="Local pt_inception-2015-12-05-6726825d.pth.")
]
DownloadOpt = Annotated[
    bool, typer.Option("--download/--no-download", help="Allow downloading the Inception weights.")
]
FidMethodOpt = Annotated[str, typer.Option("--fid-method", help="sqrtm (standard) or eigh (faster).")]


def _fid_method(name: str) -> Literal["sqrtm", "eigh"]:
    if name not in ("sqrtm", "eigh"):
        raise ConfigError(f"--fid-method: expected sqrtm or eigh, got {name!r}")
    return name  # type: ignore[return-value]


def _split(
    data: str, split: str, holdout: int, holdout_seed: int, max_images: int | None, workers: int
) -> DataSplit:
    from titok.evaluation.reconstruction import DataSplit

    if split not in ("all", "train", "val"):
        raise ConfigError(f"--split: expected all, train or val, got {split!r}")
    return DataSplit(data, split, holdout, holdout_seed, max_images, workers)  # type: ignore[arg-type]


def format_table(metrics: dict[str, float | None]) -> str:
    """Two aligned columns, metric and value (counts as integers, others with 4 decimals)."""
    width = max([len("metric"), *map(len, metrics)])
    lines = [f"{'metric':<{width}}  value"]
    for key, value in metrics.items():
        if value is None:
            text = "-"
        elif key.startswith("num_") or key.endswith("_images"):
            text = str(int(value))
        elif isinstance(value, float) and not math.isfinite(value):
            text = str(value)
        else:
            text = f"{value:.4f}"
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def _report(payload: dict[str, Any], json_out: Path | None) -> None:
    typer.echo(format_table(payload["metrics"]))
    if json_out is not None:
        write_json(payload, json_out)
        typer.echo(f"wrote {json_out}", err=True)


def _network_info(network: torch.nn.Module | None) -> dict[str, Any]:
    from titok.evaluation.feature_networks import network_fingerprint

    if network is None:
        return {"feature_network": None}
    return {"feature_network": network.name, "feature_network_fingerprint": network_fingerprint(network)}


# ---------------------------------------------------------------------------------------- eval commands


@eval_app.command("reconstruction")
def reconstruction(
    data: DataOpt,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    split: SplitOpt = "val",
    holdout: HoldoutOpt = 500,
    holdout_seed: HoldoutSeedOpt = 0,
    max_images: MaxImagesOpt = None,
    num_workers: WorkersOpt = 0,
    feature_net: FeatureNetOpt = "inception",
    inception_weights: InceptionWeightsOpt = None,
    download: DownloadOpt = True,
    no_fid: Annotated[bool, typer.Option("--no-fid", help="Skip rFID (no feature network needed).")] = False,
    teacher: TeacherOpt = None,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    fid_method: FidMethodOpt = "sqrtm",
    ref_stats: Annotated[
        Path | None,
        typer.Option(
            "--ref-stats",
            help="Compare the reconstructions with these statistics (.npz of `eval reference-stats`) "
            "instead of the split's originals.",
        ),
    ] = None,
    json_out: JsonOutOpt = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size",
            min=8,
            help="Resolution for a 2D VQGAN export (`titok train vqgan`), measured at its "
            "(size / f)^2 grid tokens; a TiTok has its own.",
        ),
    ] = None,
) -> None:
    """rFID, PSNR, SSIM and codebook usage of a tokenizer (or a 2D VQGAN) over a split of a dataset."""
    from titok.evaluation.feature_networks import resolve_feature_network
    from titok.evaluation.reconstruction import evaluate_reconstruction
    from titok.evaluation.reference_stats import load_stats_for

    if ref_stats is not None and no_fid:
        raise ConfigError("--ref-stats is for the rFID: drop --no-fid or --ref-stats")
    dev, dt = parse_device(device), parse_dtype(dtype)
    data_split = _split(data, split, holdout, holdout_seed, max_images, num_workers)
    tok, desc = resolve_reconstruction_model(model, preset, dev, image_size)
    typer.echo(f"model: {desc}", err=True)
    network = None if no_fid else resolve_feature_network(feature_net, dev, inception_weights, download)
    reference = load_stats_for(ref_stats, network) if ref_stats is not None and network is not None else None
    metrics = evaluate_reconstruction(
        tok,
        data_split,
        network,
        batch_size=batch_size,
        dtype=dt,
        teacher=load_teacher(teacher, dev),
        reference=reference,
        fid_method=_fid_method(fid_method),
    )
    payload = {
        "command": "eval reconstruction",
        "model": desc,
        "data": data_split.describe(),
        "reference": {"file": str(ref_stats)} if ref_stats is not None else "the split's originals",
        "image_size": tok.image_size,
        "dtype": str(dt).removeprefix("torch."),
        **_network_info(network),
        "metrics": metrics,
    }
    _report(payload, json_out)


@eval_app.command("generation")
def generation(
    generator: GeneratorOpt = None,
    num: Annotated[
        int, typer.Option("--num", "-n", min=2, help="Number of samples (class-balanced).")
    ] = 50000,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    generator_preset: GeneratorPresetOpt = None,
    ref_stats: Annotated[Path | None, typer.Option("--ref-stats", help="Reference statistics .npz.")] = None,
    ref_data: Annotated[
        str | None,
        typer.Option("--ref-data", help="Data to compute (and cache) the reference statistics from."),
    ] = None,
    ref_split: Annotated[
        str, typer.Option("--ref-split", help="Split of --ref-data: all, train, val.")
    ] = "all",
    ref_holdout: Annotated[
        int, typer.Option("--ref-holdout", min=0, help="Holdout size for --ref-split.")
    ] = 500,
    ref_max_images: Annotated[
        int | None, typer.Option("--ref-max-images", min=1, help="First N images of --ref-data.")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Reference statistics cache.")] = None,
    feature_net: FeatureNetOpt = "inception",
    inception_weights: InceptionWeightsOpt = None,
    download: DownloadOpt = True,
    samples_out: Annotated[
        Path | None,
        typer.Option("--samples-out", help="ADM evaluator .npz of the samples (arr_0 uint8 NHWC)."),
    ] = Path("samples.npz"),
    num_steps: NumStepsOpt = None,
    guidance_scale: GuidanceOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    teacher: TeacherOpt = None,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    fid_method: FidMethodOpt = "sqrtm",
    json_out: JsonOutOpt = None,
) -> None:
    """gFID and IS of class-balanced samples against reference statistics; writes the ADM .npz."""
    from titok.evaluation.feature_networks import resolve_feature_network
    from titok.evaluation.generation import evaluate_generation
    from titok.evaluation.reference_stats import cached_reference_stats, load_stats_for

    if generator is None:
        raise ConfigError("--generator is required (a generator preset, folder or weights file)")
    if (ref_stats is None) == (ref_data is None):
        raise ConfigError("give exactly one of --ref-stats FILE.npz and --ref-data D")
    dev, dt = parse_device(device), parse_dtype(dtype)
    tok, desc = resolve_model(model, preset, dev)
    gen, gen_desc = resolve_generator(generator, generator_preset, tok, dev)
    typer.echo(f"model: {desc}; generator: {gen_desc}", err=True)
    network = resolve_feature_network(feature_net, dev, inception_weights, download)
    reference_info: dict[str, Any]
    if ref_stats is not None:
        reference = load_stats_for(ref_stats, network)
        reference_info = {"file": str(ref_stats)}
    else:
        assert ref_data is not None
        ref_split_sel = _split(ref_data, ref_split, ref_holdout, 0, ref_max_images, 0)
        reference, path, reused = cached_reference_stats(
            ref_split_sel, network, tok.config.image_size, cache_dir=cache_dir, batch_size=batch_size
        )
        typer.echo(f"reference statistics {'reused from' if reused else 'cached in'} {path}", err=True)
        reference_info = {"data": ref_split_sel.describe(), "file": str(path)}
    metrics = evaluate_generation(
        tok,
        gen,
        num,
        network,
        reference,
        batch_size=batch_size,
        seed=seed,
        dtype=dt,
        teacher=load_teacher(teacher, dev),
        sampling=sampling_settings(num_steps, guidance_scale),
        samples_out=samples_out,
        fid_method=_fid_method(fid_method),
    )
    if samples_out is not None:
        typer.echo(f"wrote {num} samples to {samples_out}", err=True)
    payload = {
        "command": "eval generation",
        "model": desc,
        "generator": gen_desc,
        "sampling": sampling_settings(num_steps, guidance_scale) | {"seed": seed},
        "reference": reference_info | {"count": reference.count},
        "samples": str(samples_out) if samples_out is not None else None,
        "dtype": str(dt).removeprefix("torch."),
        **_network_info(network),
        "metrics": metrics,
    }
    _report(payload, json_out)


@eval_app.command("probe")
def probe(
    data: DataOpt,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    val_data: Annotated[
        str | None,
        typer.Option("--val-data", help="Separate validation data (default: a holdout of --data)."),
    ] = None,
    holdout: HoldoutOpt = 500,
    holdout_seed: HoldoutSeedOpt = 0,
    max_train: Annotated[
        int | None, typer.Option("--max-train", min=1, help="First N training images.")
    ] = None,
    max_val: Annotated[
        int | None, typer.Option("--max-val", min=1, help="First N validation images.")
    ] = None,
    num_workers: WorkersOpt = 0,
    pool: Annotated[str, typer.Option("--pool", help="mean over tokens, or concat of all tokens.")] = "mean",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Probe training epochs.")] = 100,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate (cosine schedule).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0)] = 0.05,
    optimizer: Annotated[str, typer.Option("--optimizer", help="adamw or sgd.")] = "adamw",
    probe_batch_size: Annotated[int, typer.Option("--probe-batch-size", min=0, help="0: full batch.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the probe's batch order.")] = 0,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    json_out: JsonOutOpt = None,
) -> None:
    """Linear probe of the frozen encoder's K latent tokens (before quantisation): val top-1."""
    from titok.evaluation.linear_probe import LinearProbeConfig
    from titok.evaluation.reconstruction import DataSplit
    from titok.evaluation.token_probe import probe_tokenizer

    if pool not in ("mean", "concat"):
        raise ConfigError(f"--pool: expected mean or concat, got {pool!r}")
    if optimizer not in ("adamw", "sgd"):
        raise ConfigError(f"--optimizer: expected adamw or sgd, got {optimizer!r}")
    dev, dt = parse_device(device), parse_dtype(dtype)
    if val_data is None:
        train_split = DataSplit(data, "train", holdout, holdout_seed, max_train, num_workers)
        val_split = DataSplit(data, "val", holdout, holdout_seed, max_val, num_workers)
    else:
        train_split = DataSplit(data, "all", holdout, holdout_seed, max_train, num_workers)
        val_split = DataSplit(val_data, "all", holdout, holdout_seed, max_val, num_workers)
    tok, desc = resolve_model(model, preset, dev)
    typer.echo(f"model: {desc}", err=True)
    config = LinearProbeConfig(
        epochs=epochs,
        batch_size=probe_batch_size,
        optimizer=optimizer,  # type: ignore[arg-type]
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
    )
    metrics = probe_tokenizer(tok, train_split, val_split, pool, config, batch_size, dt)  # type: ignore[arg-type]
    payload = {
        "command": "eval probe",
        "model": desc,
        "train": train_split.describe(),
        "val": val_split.describe(),
        "pool": pool,
        "probe": vars(config),
        "metrics": metrics,
    }
    _report(payload, json_out)


@eval_app.command("reference-stats")
def reference_stats(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npz.")],
    image_size: Annotated[
        int, typer.Option("--image-size", min=8, help="Center-crop size (that of the images compared).")
    ] = 256,
    split: SplitOpt = "all",
    holdout: HoldoutOpt = 500,
    holdout_seed: HoldoutSeedOpt = 0,
    max_images: MaxImagesOpt = None,
    num_workers: WorkersOpt = 0,
    feature_net: FeatureNetOpt = "inception",
    inception_weights: InceptionWeightsOpt = None,
    download: DownloadOpt = True,
    batch_size: BatchOpt = 64,
    device: DeviceOpt = "cpu",
) -> None:
    """Compute reference statistics (mu, sigma, count, feature network) of a dataset."""
    from titok.evaluation.feature_networks import network_fingerprint, resolve_feature_network
    from titok.evaluation.reference_stats import compute_reference_stats, save_stats

    dev = parse_device(device)
    data_split = _split(data, split, holdout, holdout_seed, max_images, num_workers)
    network = resolve_feature_network(feature_net, dev, inception_weights, download)
    stats = compute_reference_stats(data_split, network, image_size, batch_size)
    path = save_stats(stats, out, network_fingerprint(network))
    typer.echo(
        f"wrote statistics of {stats.count} images ({stats.feature_network}, dim {len(stats.mu)}) to {path}"
    )


__all__ = ["eval_app", "format_table"]
