"""Shared test fixtures: paths to the shared data and small helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.training_runs import shard, stage1_run, vqgan_run  # noqa: F401  (the training tests' runs)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference" / "official-state-dicts.json"
IMAGENETTE = SHARED / "data" / "imagenette"
CIFAR10 = SHARED / "data" / "cifar10"

# One thread per test process: `make test` runs two processes (pytest-xdist) on a 2-core machine,
# and oversubscribed torch threads are many times slower than one thread each.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def reference() -> dict:
    """The published checkpoints' names, shapes and configs."""
    if not REFERENCE.is_file():
        pytest.skip(f"reference file not found: {REFERENCE}")
    return json.loads(REFERENCE.read_text())


#: Set to 1 to run the suite on the synthetic stand-in even where the shared data exists (what a
#: fresh clone runs).
SYNTHETIC = os.environ.get("TITOK_TEST_SYNTHETIC_DATA") == "1"


@pytest.fixture(scope="session")
def real_imagenette() -> Path:
    """The shared Imagenette shards, for tests of what the real images give (figures, the shipped
    models' reported quality); skipped where they are absent."""
    if SYNTHETIC or not IMAGENETTE.is_dir():
        pytest.skip(f"needs the real Imagenette shards at {IMAGENETTE}")
    return IMAGENETTE


@pytest.fixture(scope="session")
def imagenette(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Imagenette-shaped shards for tests of mechanics: the shared data where present, else a
    synthetic stand-in in the same layout (:mod:`tests.synthetic_data`)."""
    if IMAGENETTE.is_dir() and not SYNTHETIC:
        return IMAGENETTE
    from tests.synthetic_data import make_imagenette_like

    return make_imagenette_like(tmp_path_factory.mktemp("imagenette", numbered=False))


#: Device of the tests marked ``device`` (``benchmarks/gpu_check.py`` sets it to ``cuda``).
TEST_DEVICE = os.environ.get("TITOK_TEST_DEVICE", "cpu")
if TEST_DEVICE.startswith("cuda"):
    # Exact-resume tests compare runs bit for bit: CUDA must use its deterministic kernels. Ops
    # that have none (the discriminator's adaptive max-pool backward) warn, naming themselves,
    # rather than stop the run.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


@pytest.fixture(scope="session")
def test_device() -> torch.device:
    """The device of the device tests (``TITOK_TEST_DEVICE``, default cpu); fails, not skips, when
    the device asked for is not there."""
    device = torch.device(TEST_DEVICE)
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"TITOK_TEST_DEVICE={TEST_DEVICE} but torch sees no CUDA device")
    return device


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache in offline mode; returns the cache folder."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def put_in_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """Lay out ``files`` as a cached snapshot of model repo ``repo_id`` (the hub cache format)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, data in files.items():
        (snap / name).write_bytes(data)


@pytest.fixture(scope="session")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of 16 smooth random 16 px pictures in two classes."""
    root = tmp_path_factory.mktemp("pictures")
    gen = torch.Generator().manual_seed(0)
    for i in range(16):
        low = torch.rand(3, 4, 4, generator=gen)
        image = torch.nn.functional.interpolate(low[None], size=16, mode="bicubic", align_corners=False)[0]
        array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        folder = root / f"class{i % 2}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(array).save(folder / f"{i:02d}.png")
    return root
