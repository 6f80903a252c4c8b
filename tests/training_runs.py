"""Tiny training runs shared by the training tests: data, recipes, helpers and fixtures.

Data: a small tar shard made of the first Imagenette samples (the shared data, or its synthetic
stand-in), repeated with augmentation off, so a few dozen steps on a fixed seed show the loss
falling. The fixtures (``shard``, ``vqgan_run``, ``stage1_run``) are registered by conftest.py.
"""

from __future__ import annotations

import io
import statistics
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.synthetic_data import write_tar
from titok.training import Recipe, TrainResult, load_recipe, make_task, train

RECIPES = Path(__file__).resolve().parents[1] / "src" / "titok" / "recipes"
# Quiet and deterministic: no augmentation, no progress bar, the GAN off unless a test turns it on.
FAST = [
    "experiment.progress_bar=false",
    "experiment.image_every=0",
    "experiment.log_every=5",
    "data.augment=false",
    "data.shuffle_buffer=8",
    "training.batch_size=8",
    "lr_scheduler.warmup_steps=2",
    "losses.discriminator_start=1000",
]


def copy_samples(source: Path, n: int) -> list[tuple[str, bytes]]:
    """The first ``n`` samples (``.cls`` and ``.jpg`` members) of a WebDataset shard."""
    members: list[tuple[str, bytes]] = []
    with tarfile.open(source) as tar:
        for member in tar:
            if len(members) == 2 * n:
                break
            handle = tar.extractfile(member)
            assert handle is not None
            members.append((member.name, handle.read()))
    return members


@pytest.fixture(scope="session")
def shard(imagenette: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shard of 8 Imagenette images (one batch)."""
    folder = tmp_path_factory.mktemp("data")
    return write_tar(folder / "small-0000.tar", copy_samples(imagenette / "train-0000.tar", 8))


def shard_images(shard: Path, size: int) -> torch.Tensor:
    """The images of a shard as one batch (N, 3, size, size) in [0, 1], resized and center-cropped."""
    from titok.images import pil_to_tensor, resize_center_crop

    with tarfile.open(shard) as tar:
        files = [tar.extractfile(m) for m in tar if m.name.endswith(".jpg")]
        pictures = [Image.open(io.BytesIO(f.read())).convert("RGB") for f in files if f is not None]
    return torch.stack([pil_to_tensor(resize_center_crop(img, size)) for img in pictures])


def finetune_recipe(start: Path, pictures: Path, perceptual_net: Path, *overrides: str) -> Recipe:
    """The packaged ``imagenette64_finetune`` recipe shrunk to 4 steps of 16 px pictures, from the
    tokenizer folder ``start``, with the classifier folder ``perceptual_net`` as perceptual term."""
    return load_recipe(
        RECIPES / "imagenette64_finetune.yaml",
        [
            f"init_from={start}",
            f"data.train={pictures}",
            "data.image_size=16",
            "data.holdout=0",
            "data.augment=false",
            f"losses.perceptual_network={perceptual_net}",
            "losses.discriminator_start=2",
            "training.batch_size=4",
            "training.max_train_steps=4",
            "lr_scheduler.warmup_steps=1",
            "experiment.progress_bar=false",
            "experiment.image_every=0",
            "experiment.log_every=1",
            "experiment.save_every=4",
            *overrides,
        ],
        mode="stage2",
    )


def result_recipe(result: TrainResult) -> Recipe:
    """The recipe a run was trained with (its ``recipe.yaml``)."""
    return load_recipe(result.output_dir / "recipe.yaml")


def train_recipe(recipe: str, mode: str, out: Path, *overrides: str) -> TrainResult:
    loaded = load_recipe(RECIPES / f"{recipe}.yaml", [*FAST, *overrides], mode=mode)
    return train(make_task(loaded), output_dir=out)


def losses_of(result: TrainResult, key: str = "total") -> list[float]:
    return [logs[key] for logs in result.history]


def assert_falls(losses: list[float], ratio: float, n: int = 3) -> None:
    first, last = statistics.mean(losses[:n]), statistics.mean(losses[-n:])
    assert last < ratio * first, f"loss did not fall enough: first {losses[:n]}, last {losses[-n:]}"


@pytest.fixture(scope="session")
def vqgan_run(shard: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A tiny VQGAN teacher (20 steps); its export is the teacher of the stage-1/2 runs."""
    out = tmp_path_factory.mktemp("vqgan")
    return train_recipe("tiny_vqgan", "vqgan", out, f"data.train={shard}", "training.max_train_steps=20")


@pytest.fixture(scope="session")
def stage1_run(vqgan_run: TrainResult, shard: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("stage1")
    return train_recipe(
        "tiny_stage1",
        "stage1",
        out,
        f"data.train={shard}",
        f"teacher={vqgan_run.export_dir}",
        "training.max_train_steps=20",
    )
