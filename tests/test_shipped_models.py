"""The built-in imagenette64 tokenizer and generator: offline loading, the PSNR their report states, demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import titok
from titok.cli import main
from titok.evaluation.reconstruction import DataSplit, split_batches
from titok.metrics import psnr
from titok.resources import builtin_generators_dir, builtin_models_dir

TOKENIZER = builtin_models_dir() / "imagenette64"
GENERATOR = builtin_generators_dir() / "imagenette64"

pytestmark = pytest.mark.skipif(
    not (TOKENIZER / "config.json").is_file(), reason="the built-in imagenette64 models are not installed"
)


@pytest.fixture(autouse=True)
def offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_shipped_files_are_small_and_half_precision() -> None:
    size = sum(f.stat().st_size for d in (TOKENIZER, GENERATOR) for f in d.rglob("*") if f.is_file())
    assert size <= 25 * 2**20, f"{size / 2**20:.1f} MB"
    from safetensors import safe_open

    for folder in (TOKENIZER, GENERATOR):
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
        assert "F32" not in dtypes and "F16" in dtypes, (folder, dtypes)


def test_tokenizer_reconstructs_held_out_images_to_the_reported_psnr(real_imagenette) -> None:
    source = json.loads((TOKENIZER / "source.json").read_text())
    model = titok.TiTok.from_pretrained("imagenette64")
    assert next(model.parameters()).dtype == torch.float32
    split = DataSplit(str(real_imagenette), "val", 500, 0, int(source["num_heldout_images"]))
    values = []
    for batch in split_batches(split, model.config.image_size, 100, progress=False):
        values.append(psnr(model.reconstruct(batch["image"]), batch["image"]))
    measured = float(torch.cat(values).mean())
    assert measured >= source["heldout_psnr_float32"] - 0.5, (measured, source["heldout_psnr_float32"])


def test_generator_loads_offline_and_matches_its_tokenizer() -> None:
    gen = titok.Generator.from_pretrained("imagenette64")
    tok = titok.TiTok.from_pretrained("imagenette64")
    assert gen.config.seq_len == tok.num_tokens and gen.config.codebook_size == tok.config.codebook_size
    assert gen.config.class_names is not None and len(gen.config.class_names) == 10
    tokens = gen.generate(torch.tensor([0, 9]), seed=0)
    assert tokens.shape == (2, tok.num_tokens)
    assert torch.equal(tokens, gen.generate(torch.tensor([0, 9]), seed=0))


def test_demo_reconstructs_and_generates_a_grid_per_class(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TITOK_SAMPLE_DATA", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "-n", "2", "--per-class", "1"]) == 0
    assert len(list((out / "reconstructions").glob("*_reconstruction.png"))) == 2
    strips = list((out / "reconstructions").glob("*_strip.png"))
    # A tokenizer trained on prefixes also gets its coarse-to-fine strips (original + k = 1, 2, ..., K).
    variable = titok.TiTok.from_pretrained("imagenette64").config.variable_length
    assert len(strips) == (2 if variable else 0)
    # ... and the built-in variable-length model's strips: the original, then k = 1, 2, 4, 8, 16, 32.
    flex_strips = sorted((out / "strips").glob("*_strip.png"))
    assert len(flex_strips) == 2
    from PIL import Image as _Image

    assert _Image.open(flex_strips[0]).size == (7 * 64, 64)
    grid = out / "generated" / "grid.png"
    assert grid.is_file()
    from PIL import Image

    width, height = Image.open(grid).size
    assert height == 10 * 64 and width > 64  # one row per class, labelled on the left


def test_tokenizer_uses_its_tokens_and_codebook_on_held_out_images(real_imagenette) -> None:
    """Off the mean-image plateau: the output follows the tokens, and many codes are in use."""
    from titok.evaluation.token_use import token_use

    model = titok.TiTok.from_pretrained("imagenette64")
    split = DataSplit(str(real_imagenette), "val", 500, 0, 200)
    images = torch.cat(
        [b["image"] for b in split_batches(split, model.config.image_size, 100, progress=False)]
    )
    figures = token_use(model, images)
    assert figures["psnr"] > figures["mean_image_psnr"] + 3.0, figures
    assert figures["token_sensitivity"] > 0.3, figures
    assert figures["codes_used"] >= 0.25 * model.codebook_size, figures


def test_generator_makes_different_images_for_different_classes() -> None:
    gen = titok.Generator.from_pretrained("imagenette64")
    tok = titok.TiTok.from_pretrained("imagenette64")
    images = tok.decode(gen.generate(torch.arange(10), seed=0))
    distances = torch.cdist(images.flatten(1), images.flatten(1))
    off_diagonal = distances[~torch.eye(10, dtype=torch.bool)]
    # Every pair of classes differs by more than a few grey levels on average (a mean-image generator: 0).
    assert off_diagonal.min() / images[0].numel() ** 0.5 > 0.05, off_diagonal.min()


def test_the_variable_length_model_reconstructs_every_prefix_to_its_reported_psnr(real_imagenette) -> None:
    """``imagenette64-flex``: trained on token prefixes; PSNR rises with k as reported."""
    folder = builtin_models_dir() / "imagenette64-flex"
    source = json.loads((folder / "source.json").read_text())
    model = titok.TiTok.from_pretrained("imagenette64-flex")
    assert model.config.variable_length
    split = DataSplit(str(real_imagenette), "val", 500, 0, 200)
    images = torch.cat([b["image"] for b in split_batches(split, 64, 100, progress=False)])
    tokens = model.encode(images)
    measured = {k: float(psnr(model.decode(tokens[:, :k]), images).mean()) for k in (1, 8, 32)}
    assert measured[1] < measured[8] < measured[32], measured
    for k, value in measured.items():
        assert value >= source["heldout_psnr_by_num_tokens"][str(k)] - 0.5, (k, measured)


def test_the_variable_length_generator_samples_any_length() -> None:
    gen = titok.Generator.from_pretrained("imagenette64-flex")
    tok = titok.TiTok.from_pretrained(gen.config.tokenizer)
    assert gen.config.variable_length and gen.config.tokenizer == "imagenette64-flex"
    for k in (4, 32):
        tokens = gen.generate(["golf ball", "church"], num_tokens=k, seed=0)
        assert tokens.shape == (2, k) and tok.decode(tokens).shape == (2, 3, 64, 64)


def test_the_fine_tuned_decoder_kept_the_tokens_of_the_bundled_photographs() -> None:
    """Decoder fine-tuning froze encoder and quantizer: the shipped imagenette64 still writes the
    tokens its generator was trained on (recorded before the fine-tuning in tests/data)."""
    from titok.images import open_image
    from titok.samples import bundled_samples_dir

    recorded = json.loads((Path(__file__).parent / "data" / "imagenette64-sample-tokens.json").read_text())
    model = titok.TiTok.from_pretrained("imagenette64").eval()
    for photo in sorted(bundled_samples_dir().glob("*.jpg")):
        assert model.encode(open_image(photo))[0].tolist() == recorded["tokens"][photo.name], photo.name
