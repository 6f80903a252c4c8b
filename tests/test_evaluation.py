"""``titok eval ...``, ``titok bench`` and the classifier command, end to end on a few Imagenette images.

A freshly initialised tiny tokenizer, the untrained ``tiny`` generator preset and a small
classifier trained for a few steps stand in for real models: the numbers are not meaningful,
but every command runs its whole path and the reported values are checked against independent
computations where that is cheap.
"""

from __future__ import annotations

import json
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import typer

from tests.synthetic_data import write_tar
from tests.training_runs import copy_samples
from titok import TiTok
from titok.cli import main
from titok.cli.train import train_classifier_command
from titok.evaluation.reconstruction import DataSplit, split_batches
from titok.loading import load_tokenizer
from titok.metrics import (
    FID_WEIGHTS_URL,
    FeatureAccumulator,
    GaussianStats,
    fid_between,
    fid_weights_cache_path,
    load_reference_stats,
    psnr,
    save_reference_stats,
)
from titok.metrics.pattern import lattice_score, pattern_score
from titok.models.classifier import Classifier, ClassifierConfig, load_classifier
from titok.models.generator import Generator

NET = "nette32-resnet"
NUM_IMAGES = 48
HOLDOUT = 16


@pytest.fixture(scope="module")
def labelled_shard(tmp_path_factory, imagenette: Path) -> Path:
    """The first 48 labelled Imagenette samples as one WebDataset shard (these tests' own, beside
    the training tests' 8-image ``shard``)."""
    path = tmp_path_factory.mktemp("data") / "nette-0000.tar"
    return write_tar(path, copy_samples(imagenette / "train-0000.tar", NUM_IMAGES))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return TiTok.from_preset("titok-tiny-32").save_pretrained(tmp_path_factory.mktemp("tok"))


def run_train_classifier(args: list[str]) -> None:
    """``train_classifier_command`` mounted as ``classifier`` in a small app, as ``titok train`` will."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("classifier")(train_classifier_command)
    app.command("unused")(lambda: None)  # two commands keep ``classifier`` a sub-command
    app(args=["classifier", *args], standalone_mode=False)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, labelled_shard: Path) -> Path:
    out = tmp_path_factory.mktemp("clf") / NET
    run_train_classifier(
        [
            *("--data", str(labelled_shard), "--out", str(out), "--name", NET, "--image-size", "32"),
            *("--widths", "8,16", "--holdout", "8", "--epochs", "2", "--batch-size", "16"),
        ]
    )
    return out


def run(capsys, *args: object) -> tuple[int, str, str]:
    """``titok ARGS``: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_classifier_command_writes_a_named_feature_network(classifier_dir: Path) -> None:
    network = load_classifier(classifier_dir)
    assert network.name == NET and network.feature_dim == 16 and network.config.num_classes == 10
    metrics = json.loads((classifier_dir / "metrics.json").read_text())
    assert metrics["train_images"] == NUM_IMAGES - 8 and metrics["val_images"] == 8
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert 0.0 <= metrics["val_top1"] <= 1.0


def test_eval_reconstruction_measures_a_vqgan_export_at_a_given_size(
    capsys, tmp_path: Path, labelled_shard: Path, tokenizer_dir: Path
) -> None:
    """A `titok train vqgan` export is measured as its grid of (size / f)^2 tokens (here 8 x 8): the same PSNR as
    decoding its codes directly; it needs --image-size, which a TiTok may only repeat."""
    from titok.loading.weights import save_model
    from titok.models.grid_tokenizer import GridTokenizer
    from titok.models.vqgan import VQGAN, VQGANConfig

    torch.manual_seed(0)
    vqgan = VQGAN(VQGANConfig(channel_mult=(1, 1, 2), hidden_channels=32, num_res_blocks=1, z_channels=8))
    folder = tmp_path / "vqgan"
    save_model(vqgan, folder, kind="vqgan", config=vqgan.config.to_dict())
    base = ("eval", "reconstruction", "--model", folder, "--data", labelled_shard, "--no-fid")
    base = (*base, "--split", "val", "--holdout", HOLDOUT)

    code, _, err = run(capsys, *base)
    assert code != 0 and "records no image size: give --image-size" in err
    report = tmp_path / "rec.json"
    code, _, err = run(capsys, *base, "--image-size", 32, "--json-out", report)
    assert code == 0, err
    payload = json.loads(report.read_text())
    assert payload["image_size"] == 32 and "64 grid tokens at 32 px" in payload["model"]
    grid = GridTokenizer(vqgan.eval(), 32)
    split = DataSplit(str(labelled_shard), "val", HOLDOUT, 0, None)
    images = torch.cat([b["image"] for b in split_batches(split, 32, 8, progress=False)])
    with torch.inference_mode():
        expected = float(psnr(grid.decode(grid.encode(images)), images).mean())
    assert payload["metrics"]["num_images"] == HOLDOUT
    assert payload["metrics"]["PSNR"] == pytest.approx(expected, abs=1e-4)

    code, _, err = run(
        capsys,
        "eval",
        "reconstruction",
        "--model",
        tokenizer_dir,
        "--data",
        labelled_shard,
        "--no-fid",
        "--image-size",
        64,
    )
    assert code != 0 and "works at 32 px" in err


def test_train_classifier_command_rejects_bad_widths(tmp_path: Path, labelled_shard: Path) -> None:
    from titok.errors import ConfigError

    with pytest.raises(ConfigError, match="--widths"):
        run_train_classifier(["--data", str(labelled_shard), "--out", str(tmp_path / "c"), "--widths", "8,x"])


def test_eval_reconstruction_writes_labelled_metrics_that_match_a_direct_computation(
    capsys, tmp_path: Path, labelled_shard: Path, tokenizer_dir: Path, classifier_dir: Path
) -> None:
    report = tmp_path / "rec.json"
    code, out, _ = run(
        capsys,
        *("eval", "reconstruction", "--model", tokenizer_dir, "--data", labelled_shard),
        *("--split", "val", "--holdout", HOLDOUT, "--feature-net", classifier_dir),
        *("--batch-size", "6", "--json-out", report),
    )
    assert code == 0
    payload = json.loads(report.read_text())
    metrics = payload["metrics"]
    assert payload["feature_network"] == NET and payload["image_size"] == 32
    assert set(metrics) == {
        "num_images",
        f"rFID[{NET}]",
        "PSNR",
        "SSIM",
        "codebook_used_fraction",
        "codebook_perplexity",
        "codebook_entropy_bits",
        "seam_score",
        "seam_score_originals",
        "pattern_score",
        "pattern_score_originals",
        "lattice_score",
        "lattice_score_originals",
    }
    assert f"rFID[{NET}]" in out and "PSNR" in out  # the table

    # The same images, tokenizer and formulas by hand.
    model = load_tokenizer(tokenizer_dir).eval()
    images = torch.cat([b["image"] for b in DataSplit(str(labelled_shard), "val", HOLDOUT).loader(32, 8)])
    assert metrics["num_images"] == len(images) == HOLDOUT
    with torch.inference_mode():
        tokens = model.encode(images)
        recon = model.decode(tokens)
    mse = (recon.double() - images.double()).square().flatten(1).mean(dim=1)
    assert metrics["PSNR"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-4)
    assert 0.0 < metrics["PSNR"] < 30.0  # an untrained decoder is far from the images
    assert metrics["pattern_score"] == pytest.approx(pattern_score(recon, model.config.patch_size), rel=1e-4)
    assert metrics["lattice_score"] == pytest.approx(lattice_score(recon, model.config.patch_size), rel=1e-3)
    assert -1.0 <= metrics["SSIM"] < 0.5
    counts = torch.bincount(tokens.flatten(), minlength=1024).double()
    assert metrics["codebook_used_fraction"] == pytest.approx(float((counts > 0).sum()) / 1024)
    freq = counts[counts > 0] / counts.sum()
    assert metrics["codebook_perplexity"] == pytest.approx(float(torch.exp(-(freq * freq.log()).sum())))
    assert 1.0 <= metrics["codebook_perplexity"] <= float((counts > 0).sum())
    assert metrics[f"rFID[{NET}]"] > 0.5  # noise against images (near-identical ones: < 0.05)


def test_eval_reconstruction_against_reference_statistics(
    capsys, tmp_path: Path, labelled_shard: Path, tokenizer_dir: Path, classifier_dir: Path
) -> None:
    """Statistics of the same split's originals give the same rFID as comparing with them directly."""
    split = ("--split", "val", "--holdout", HOLDOUT)
    stats = tmp_path / "val.npz"
    code, _, _ = run(
        capsys,
        *("eval", "reference-stats", "--data", labelled_shard, "--image-size", "32", *split),
        *("--feature-net", classifier_dir, "--out", stats),
    )
    assert code == 0
    base = ("eval", "reconstruction", "--model", tokenizer_dir, "--data", labelled_shard, *split)
    direct, with_file = tmp_path / "direct.json", tmp_path / "file.json"
    for out, extra in ((direct, ()), (with_file, ("--ref-stats", stats))):
        code, _, err = run(capsys, *base, "--feature-net", classifier_dir, *extra, "--json-out", out)
        assert code == 0, err
    direct_m, file_payload = json.loads(direct.read_text())["metrics"], json.loads(with_file.read_text())
    assert file_payload["reference"] == {"file": str(stats)}
    assert file_payload["metrics"][f"rFID[{NET}]"] == pytest.approx(direct_m[f"rFID[{NET}]"], rel=1e-6)
    # statistics of the whole shard instead: another reference, another figure
    whole = tmp_path / "all.npz"
    run(
        capsys,
        *("eval", "reference-stats", "--data", labelled_shard, "--image-size", "32"),
        "--feature-net",
        classifier_dir,
        "--out",
        whole,
    )
    code, _, _ = run(
        capsys, *base, "--feature-net", classifier_dir, "--ref-stats", whole, "--json-out", with_file
    )
    assert code == 0
    assert json.loads(with_file.read_text())["metrics"][f"rFID[{NET}]"] != pytest.approx(
        direct_m[f"rFID[{NET}]"]
    )
    code, _, err = run(capsys, *base, "--no-fid", "--ref-stats", stats)
    assert code == 2 and "--ref-stats" in err


def test_eval_reconstruction_of_near_identical_images_scores_as_such(
    capsys, monkeypatch, tmp_path: Path, labelled_shard: Path, tokenizer_dir: Path, classifier_dir: Path
) -> None:
    """A decoder that returns every pixel off by exactly 0.01: PSNR 40 dB, SSIM ~1, rFID ~0."""
    from titok.evaluation import reconstruction

    last: list[torch.Tensor] = []
    encode = TiTok.encode

    def remembering_encode(self, images: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        last[:] = [images.cpu()]
        return encode(self, images, *args, **kwargs)

    def off_by_one_hundredth(*args, **kwargs) -> torch.Tensor:
        images = last[0]
        return torch.where(images < 0.5, images + 0.01, images - 0.01)

    monkeypatch.setattr(TiTok, "encode", remembering_encode)
    monkeypatch.setattr(reconstruction, "decode_to_images", off_by_one_hundredth)
    report = tmp_path / "rec.json"
    code, _, _ = run(
        capsys,
        *("eval", "reconstruction", "--model", tokenizer_dir, "--data", labelled_shard, "--split", "all"),
        *("--feature-net", classifier_dir, "--batch-size", "16", "--json-out", report),
    )
    assert code == 0
    metrics = json.loads(report.read_text())["metrics"]
    assert metrics["num_images"] == NUM_IMAGES
    assert metrics["PSNR"] == pytest.approx(40.0, abs=1e-3)
    assert metrics["SSIM"] > 0.99
    assert 0.0 <= metrics[f"rFID[{NET}]"] < 0.05


def test_eval_generation_writes_adm_samples_and_reports_gfid_and_is_of_the_network(
    capsys, tmp_path: Path, labelled_shard: Path, tokenizer_dir: Path, classifier_dir: Path
) -> None:
    torch.manual_seed(0)
    generator = Generator.from_preset("tiny", codebook_size=1024, seq_len=16, num_classes=10)
    generator_dir = generator.save_pretrained(tmp_path / "generator")
    samples, report, cache = tmp_path / "samples.npz", tmp_path / "gen.json", tmp_path / "cache"
    code, out, _ = run(
        capsys,
        *("eval", "generation", "--model", tokenizer_dir, "--generator", generator_dir, "--num", "12"),
        *("--num-steps", "2", "--batch-size", "5", "--ref-data", labelled_shard, "--cache-dir", cache),
        *("--feature-net", classifier_dir, "--samples-out", samples, "--json-out", report),
    )
    assert code == 0
    with np.load(samples) as archive:
        pixels, labels = archive["arr_0"], archive["arr_1"]
    assert pixels.dtype == np.uint8 and pixels.shape == (12, 32, 32, 3)
    assert labels.tolist() == [*range(10), 0, 1]  # class-balanced over the 10 classes
    metrics = json.loads(report.read_text())["metrics"]
    assert set(metrics) == {"num_images", f"gFID[{NET}]", f"IS[{NET}]", f"IS_std[{NET}]"}
    assert metrics["num_images"] == 12 and f"gFID[{NET}]" in out
    assert 1.0 - 1e-6 <= metrics[f"IS[{NET}]"] <= 10.0

    # The gFID is that of the written samples against the cached statistics of the 48 images.
    (stats_file,) = cache.glob("*.npz")
    reference = load_reference_stats(stats_file, feature_network=NET)
    assert reference.count == NUM_IMAGES
    accumulator = FeatureAccumulator(load_classifier(classifier_dir), keep_probs=False)
    accumulator.update(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255)
    expected = fid_between(accumulator.compute().stats, reference)
    assert metrics[f"gFID[{NET}]"] == pytest.approx(expected, rel=1e-5)


def test_reference_statistics_are_computed_once_then_reused(
    capsys, monkeypatch, tmp_path: Path, labelled_shard: Path, tokenizer_dir: Path, classifier_dir: Path
) -> None:
    from titok.evaluation import reference_stats

    calls: list[int] = []
    compute = reference_stats.compute_reference_stats

    def counting(*args, **kwargs) -> GaussianStats:
        calls.append(1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(reference_stats, "compute_reference_stats", counting)
    cache = tmp_path / "cache"
    common = (
        *("eval", "generation", "--model", tokenizer_dir, "--generator", "tiny", "--num", "2"),
        *("--num-steps", "1", "--ref-data", labelled_shard, "--cache-dir", cache),
        *("--feature-net", classifier_dir, "--samples-out", tmp_path / "s.npz"),
    )
    args = (*common, "--ref-max-images", "20")
    code, _, err = run(capsys, *args)
    assert code == 0 and "cached in" in err and calls == [1]
    (stats_file,) = cache.glob("*.npz")
    stamp = stats_file.stat().st_mtime_ns
    with np.load(stats_file) as archive:
        assert int(archive["count"]) == 20 and str(archive["feature_network"]) == NET
        assert archive["mu"].shape == (16,) and archive["sigma"].shape == (16, 16)

    code, _, err = run(capsys, *args)
    assert code == 0 and "reused from" in err and calls == [1]
    assert stats_file.stat().st_mtime_ns == stamp and len(list(cache.glob("*.npz"))) == 1

    # Another selection of images is another cache entry.
    code, _, _ = run(capsys, *common, "--ref-max-images", "10")
    assert code == 0 and calls == [1, 1] and len(list(cache.glob("*.npz"))) == 2


def test_statistics_of_another_feature_network_are_refused(
    capsys, tmp_path: Path, labelled_shard: Path, tokenizer_dir: Path, classifier_dir: Path
) -> None:
    stats = tmp_path / "ref.npz"
    code, out, _ = run(
        capsys,
        *("eval", "reference-stats", "--data", labelled_shard, "--image-size", "32", "--max-images", "12"),
        *("--feature-net", classifier_dir, "--out", stats),
    )
    assert code == 0 and "12 images" in out and NET in out
    generation = (
        *("eval", "generation", "--model", tokenizer_dir, "--generator", "tiny", "--num", "2"),
        *("--num-steps", "1", "--samples-out", tmp_path / "s.npz", "--ref-stats"),
    )
    code, _, _ = run(capsys, *generation, stats, "--feature-net", classifier_dir)
    assert code == 0  # its own statistics are accepted

    torch.manual_seed(1)
    config = ClassifierConfig(name="other32-resnet", image_size=32, widths=(8, 16))
    other = Classifier(config).save_pretrained(tmp_path / "other")
    code, _, err = run(capsys, *generation, stats, "--feature-net", other)
    assert code == 2 and NET in err and "other32-resnet" in err

    same_name = Classifier(ClassifierConfig(name=NET, image_size=32, widths=(8, 16)))
    code, _, err = run(
        capsys, *generation, stats, "--feature-net", same_name.save_pretrained(tmp_path / "same")
    )
    assert code == 2 and "other weights" in err

    inception_stats = save_reference_stats(
        GaussianStats(np.zeros(16), np.eye(16), 100, "inception-v3-2015-12-05"), tmp_path / "inc.npz"
    )
    code, _, err = run(capsys, *generation, inception_stats, "--feature-net", classifier_dir)
    assert code == 2 and "inception-v3-2015-12-05" in err and NET in err


def test_eval_probe_reports_what_a_direct_probe_of_the_same_splits_gives(
    capsys, tmp_path: Path, labelled_shard: Path, tokenizer_dir: Path
) -> None:
    from titok.evaluation.linear_probe import LinearProbeConfig
    from titok.evaluation.token_probe import probe_tokenizer

    report = tmp_path / "probe.json"
    code, out, _ = run(
        capsys,
        *("eval", "probe", "--model", tokenizer_dir, "--data", labelled_shard, "--holdout", HOLDOUT),
        *("--epochs", "20", "--pool", "concat", "--lr", "0.01", "--seed", "3", "--json-out", report),
    )
    assert code == 0 and "top1" in out
    payload = json.loads(report.read_text())
    metrics = payload["metrics"]
    assert payload["pool"] == "concat" and payload["probe"]["epochs"] == 20 and payload["probe"]["lr"] == 0.01
    assert metrics["num_train_images"] == NUM_IMAGES - HOLDOUT and metrics["num_val_images"] == HOLDOUT

    def probe_directly(pool: str) -> dict[str, float]:
        splits = [DataSplit(str(labelled_shard), name, HOLDOUT, 0) for name in ("train", "val")]
        config = LinearProbeConfig(epochs=20, lr=0.01, seed=3)
        return probe_tokenizer(TiTok.from_pretrained(tokenizer_dir), *splits, pool, config, progress=False)

    direct = probe_directly("concat")
    for key in ("top1", "train_top1"):
        assert math.isclose(metrics[key], direct[key], abs_tol=1e-6), key
    mean_pool = probe_directly("mean")
    assert mean_pool["train_top1"] != direct["train_top1"] or mean_pool["top1"] != direct["top1"], (
        "the pooling must matter, or this comparison says nothing about --pool"
    )

    code, _, err = run(
        capsys, "eval", "probe", "--model", tokenizer_dir, "--data", labelled_shard, "--pool", "max"
    )
    assert code == 2 and "--pool" in err


def test_bench_prints_images_per_second(capsys, tmp_path: Path, tokenizer_dir: Path) -> None:
    report = tmp_path / "bench.json"
    code, out, _ = run(
        capsys,
        *("bench", "--model", tokenizer_dir, "--generator", "tiny", "--batch-size", "2"),
        *("--warmup", "1", "--runs", "3", "--num-steps", "1", "--json-out", report),
    )
    assert code == 0 and "images/s" in out
    rows = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()[1:]}
    assert set(rows) == {"encode", "decode", "generate"} and min(rows.values()) > 0
    payload = json.loads(report.read_text())
    assert all(len(times) == 3 for times in payload["seconds"].values())
    for op, rate in payload["images_per_second"].items():
        assert rate == pytest.approx(2 / float(np.median(payload["seconds"][op])))


def test_inception_without_weights_offline_names_the_url_and_the_path(
    capsys, monkeypatch, tmp_path: Path, labelled_shard: Path, tokenizer_dir: Path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    target = str(fid_weights_cache_path())
    assert target.startswith(str(tmp_path))
    stats = ("eval", "reference-stats", "--data", labelled_shard, "--out", tmp_path / "r.npz")
    reconstruction = ("eval", "reconstruction", "--model", tokenizer_dir, "--data", labelled_shard)
    for args in (stats, (*stats, "--no-download"), reconstruction):
        code, _, err = run(capsys, *args)
        assert code == 2, args
        assert FID_WEIGHTS_URL in err and target in err
    code, _, err = run(capsys, *stats, "--inception-weights", tmp_path / "missing.pth")
    assert code == 2 and FID_WEIGHTS_URL in err and "missing.pth" in err
    assert not (tmp_path / "r.npz").exists()


def test_bad_options_exit_with_code_2(
    capsys, tmp_path: Path, labelled_shard: Path, tokenizer_dir: Path
) -> None:
    generation = ("eval", "generation", "--model", tokenizer_dir, "--generator", "tiny", "--num", "2")
    code, _, err = run(capsys, *generation)
    assert code == 2 and "--ref-stats" in err
    code, _, err = run(
        capsys, "eval", "reconstruction", "--data", labelled_shard, "--split", "test", "--no-fid"
    )
    assert code == 2 and "--split" in err
    code, _, err = run(capsys, *generation, "--ref-stats", tmp_path / "none.npz", "--feature-net", tmp_path)
    assert code == 2 and "classifier folder" in err
