"""Shared test fixtures: paths to the shared data and small helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="session")
def imagenette() -> Path:
    if not IMAGENETTE.is_dir():
        pytest.skip(f"shared data not found: {IMAGENETTE}")
    return IMAGENETTE


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
