"""Pretokenization: token shards with labels and flipped copies, resumable, loadable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import titok.pretokenize as pt
from titok import TiTok
from titok.cli import main
from titok.data.loader import DataConfig
from titok.errors import DataError
from titok.images import pil_to_tensor, resize_center_crop
from titok.pretokenize import load_tokens, pretokenize


@pytest.fixture(scope="module")
def model() -> TiTok:
    torch.manual_seed(0)
    return TiTok.from_preset("titok-tiny-32").eval()


def _cifar() -> Path:
    from tests.conftest import CIFAR10

    if not CIFAR10.is_dir():
        pytest.skip("shared CIFAR-10 not found")
    return CIFAR10


def test_tokens_labels_and_flips_match_direct_encoding(model: TiTok, tmp_path: Path) -> None:
    data = DataConfig(path=str(_cifar() / "test-0000.tar"), batch_size=8, max_samples=24)
    out = pretokenize(model, data, tmp_path / "tok", model_name="tiny", shard_size=16, progress=False)
    ds = load_tokens(out)
    assert len(ds) == 24 and ds.tokens.shape == (24, 16) and ds.tokens_flip.shape == (24, 16)
    assert json.loads((out / "meta.json").read_text())["shards"] == ["tokens-00000.npz", "tokens-00001.npz"]
    # The first sample, encoded directly from the tar.
    import io
    import tarfile

    from PIL import Image

    with tarfile.open(_cifar() / "test-0000.tar") as tf:
        members = tf.getmembers()
        label = int(tf.extractfile(members[0]).read())
        img = Image.open(io.BytesIO(tf.extractfile(members[1]).read())).convert("RGB")
    x = pil_to_tensor(resize_center_crop(img, 32))[None]
    assert int(ds.labels[0]) == label
    assert torch.equal(ds.tokens[0], model.encode(x)[0])
    assert torch.equal(ds.tokens_flip[0], model.encode(x.flip(-1))[0])


def test_interrupted_run_resumes_to_the_same_result(model: TiTok, tmp_path: Path, monkeypatch) -> None:
    data = DataConfig(path=str(_cifar() / "test-0001.tar"), batch_size=8, max_samples=40)
    straight = load_tokens(
        pretokenize(model, data, tmp_path / "a", model_name="tiny", shard_size=16, progress=False)
    )

    calls = {"n": 0}
    real = pt._atomic_savez

    def crash_after_first_shard(path, **arrays):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(path, **arrays)

    monkeypatch.setattr(pt, "_atomic_savez", crash_after_first_shard)
    with pytest.raises(KeyboardInterrupt):
        pretokenize(model, data, tmp_path / "b", model_name="tiny", shard_size=16, progress=False)
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert meta["count"] == 16 and not meta["complete"]
    with pytest.raises(DataError, match="did not finish"):
        load_tokens(tmp_path / "b")
    monkeypatch.setattr(pt, "_atomic_savez", real)
    resumed = load_tokens(
        pretokenize(model, data, tmp_path / "b", model_name="tiny", shard_size=16, progress=False)
    )
    assert torch.equal(straight.tokens, resumed.tokens)
    assert torch.equal(straight.tokens_flip, resumed.tokens_flip)
    assert torch.equal(straight.labels, resumed.labels)


def test_settings_change_is_refused(model: TiTok, tmp_path: Path) -> None:
    data = DataConfig(path=str(_cifar() / "test-0002.tar"), batch_size=8, max_samples=8)
    pretokenize(model, data, tmp_path / "t", model_name="tiny", shard_size=8, progress=False)
    with pytest.raises(DataError, match="other settings"):
        pretokenize(model, data, tmp_path / "t", model_name="tiny", shard_size=8, flip=False, progress=False)


def test_cli_pretokenize(tmp_path: Path, capsys) -> None:
    src = _cifar() / "test-0003.tar"
    model_dir = TiTok.from_preset("titok-tiny-32").save_pretrained(tmp_path / "m")
    code = main(
        [
            "pretokenize",
            "--data",
            str(src),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(model_dir),
            "--max-samples",
            "10",
            "--batch-size",
            "5",
            "--shard-size",
            "10",
        ]
    )
    assert code == 0, capsys.readouterr().err
    with np.load(tmp_path / "out" / "tokens-00000.npz") as f:
        assert f["tokens"].shape == (10, 16) and f["labels"].shape == (10,)
