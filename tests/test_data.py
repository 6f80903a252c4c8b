"""Tests of titok.data: sources, transforms, splitting, shuffling, resume, holdout, damaged data."""

from __future__ import annotations

import io
import json
import logging
import random
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.synthetic_data import write_tar
from titok.data import (
    DataConfig,
    FileSource,
    ImageStream,
    ImageTransform,
    ShardSource,
    build_loader,
    eval_transform,
    resolve_source,
    train_transform,
)
from titok.errors import DataError
from titok.images import pil_to_tensor

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR = SHARED / "cifar10"
needs_cifar = pytest.mark.skipif(
    not (CIFAR / "test-0000.tar").exists(), reason="shared CIFAR-10 shards absent"
)


def tar_samples(path: Path, n: int) -> list[tuple[str, int, bytes]]:
    """First ``n`` (key, label, jpg bytes) of a shared shard, read with tarfile only."""
    out = []
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        for cls_m, jpg_m in zip(members[0::2], members[1::2], strict=True):
            out.append((cls_m.name[:-4], int(tar.extractfile(cls_m).read()), tar.extractfile(jpg_m).read()))
            if len(out) == n:
                break
    return out


def make_shards(
    folder: Path, n_shards: int, per_shard: int, bad_key: str | None = None
) -> tuple[str, list[str]]:
    """Tiny shards of CIFAR images; returns a brace pattern and the keys of the good samples.

    ``bad_key`` names a sample whose JPEG is cut in half (undecodable).
    """
    samples = tar_samples(CIFAR / "test-0000.tar", n_shards * per_shard)
    folder.mkdir(parents=True, exist_ok=True)
    good = []
    for s in range(n_shards):
        members = []
        for key, label, jpg in samples[s * per_shard : (s + 1) * per_shard]:
            if key == bad_key:
                jpg = jpg[: len(jpg) // 2]
            else:
                good.append(key)
            members += [(f"{key}.cls", str(label).encode()), (f"{key}.jpg", jpg)]
        write_tar(folder / f"part-{s:03d}.tar", members)
    return f"{folder}/part-{{000..{n_shards - 1:03d}}}.tar", good


def take(iterable, n: int) -> list:
    it = iter(iterable)
    return [next(it) for _ in range(n)]


def keys_of(samples) -> list[str]:
    return [s["key"] for s in samples]


# ---------------------------------------------------------------------------- reading


@needs_cifar
def test_cifar_shard_keys_labels_and_pixels():
    expected = tar_samples(CIFAR / "test-0000.tar", 40)
    samples = list(ImageStream(CIFAR / "test-0000.tar", eval_transform(32), endless=False, max_samples=40))
    assert [(s["key"], s["label"]) for s in samples] == [(k, lab) for k, lab, _ in expected]
    first = samples[0]["image"]
    assert first.shape == (3, 32, 32) and first.dtype == torch.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    direct = pil_to_tensor(Image.open(io.BytesIO(expected[0][2])).convert("RGB"))
    assert torch.equal(first, direct)


def test_imagenette_fast_jpeg_close_to_full_decode(imagenette: Path):
    spec = imagenette / "train-0000.tar"
    fast = list(ImageStream(spec, ImageTransform(64, fast_jpeg=True), endless=False, max_samples=6))
    full = list(ImageStream(spec, ImageTransform(64, fast_jpeg=False), endless=False, max_samples=6))
    assert [s["label"] for s in fast] == [lab for _, lab, _ in tar_samples(spec, 6)]
    for a, b in zip(fast, full, strict=True):
        assert a["image"].shape == (3, 64, 64)
        assert (a["image"] - b["image"]).abs().mean() < 0.02


def test_greyscale_jpeg_becomes_rgb(tmp_path):
    buf = io.BytesIO()
    Image.new("L", (40, 30), 128).save(buf, format="JPEG")
    write_tar(tmp_path / "g.tar", [("grey.cls", b"7"), ("grey.jpg", buf.getvalue())])
    (sample,) = list(ImageStream(tmp_path / "g.tar", eval_transform(16), endless=False))
    assert sample["image"].shape == (3, 16, 16) and sample["label"] == 7
    assert torch.equal(sample["image"][0], sample["image"][2])


def test_train_transform_random_crop_and_flip_are_seeded():
    img = Image.fromarray(torch.randint(0, 256, (32, 48, 3), dtype=torch.uint8).numpy())
    tf = train_transform(16)
    outs = [tf(img, random.Random(seed)) for seed in range(12)]
    assert all(o.shape == (3, 16, 16) for o in outs)
    assert torch.equal(outs[0], tf(img, random.Random(0)))
    assert len({o.numpy().tobytes() for o in outs}) > 2


# ---------------------------------------------------------------------------- sources


@needs_cifar
def test_brace_and_glob_patterns():
    src = resolve_source(f"{CIFAR}/test-{{0000..0002}}.tar")
    assert isinstance(src, ShardSource)
    assert [Path(p).name for p in src.shards] == ["test-0000.tar", "test-0001.tar", "test-0002.tar"]
    assert len(resolve_source(f"{CIFAR}/test-000[0-1].tar").shards) == 2
    assert len(resolve_source(CIFAR).shards) == 10
    with pytest.raises(DataError, match="test-0010.tar"):
        resolve_source(f"{CIFAR}/test-{{0000..0011}}.tar")
    with pytest.raises(DataError, match="matches no files"):
        resolve_source(f"{CIFAR}/nothing-*.tar")


def test_missing_path_is_a_data_error(tmp_path):
    missing = tmp_path / "no" / "such" / "train-{0000..0003}.tar"
    with pytest.raises(DataError, match=str(tmp_path / "no" / "such")):
        build_loader(DataConfig(path=str(missing)))
    with pytest.raises(DataError, match="no such file or folder"):
        resolve_source(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        resolve_source(tmp_path / "empty")


@needs_cifar
def test_image_folder_tree_and_file_lists(tmp_path):
    samples = tar_samples(CIFAR / "test-0000.tar", 6)
    for i, (key, _, jpg) in enumerate(samples):
        folder = tmp_path / "tree" / ("dog" if i % 2 else "cat")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{key}.jpg").write_bytes(jpg)
    (tmp_path / "tree" / "emu").mkdir()  # an empty class still takes its place in the sorted order
    (tmp_path / "tree" / "zebra").mkdir()
    (tmp_path / "tree" / "zebra" / "z.jpg").write_bytes(samples[0][2])

    tree = resolve_source(tmp_path / "tree")
    assert isinstance(tree, FileSource) and tree.classes == ("cat", "dog", "emu", "zebra")
    got = {s["key"]: s["label"] for s in ImageStream(tree, eval_transform(32), endless=False)}
    assert got == {
        **{f"cat/{k}.jpg": 0 for k, _, _ in samples[0::2]},
        **{f"dog/{k}.jpg": 1 for k, _, _ in samples[1::2]},
        "zebra/z.jpg": 3,
    }

    lines = [
        "# images with labels",
        f"tree/cat/{samples[0][0]}.jpg\t5",
        "",
        f"{tmp_path}/tree/zebra/z.jpg\t2",
    ]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    listed = list(ImageStream(tmp_path / "list.txt", eval_transform(32), endless=False))
    assert [(s["key"], s["label"]) for s in listed] == [
        (f"tree/cat/{samples[0][0]}.jpg", 5),
        (f"{tmp_path}/tree/zebra/z.jpg", 2),
    ]

    (tmp_path / "plain.txt").write_text(f"tree/dog/{samples[1][0]}.jpg\n")
    assert [s["label"] for s in ImageStream(tmp_path / "plain.txt", eval_transform(32), endless=False)] == [
        -1
    ]
    unlabeled = list(ImageStream(tmp_path / "tree" / "cat", eval_transform(32), endless=False))
    assert len(unlabeled) == 3 and {s["label"] for s in unlabeled} == {-1}

    (tmp_path / "bad.txt").write_text("a.jpg\tseven\n")
    with pytest.raises(DataError, match=r"bad.txt:1: label 'seven'"):
        resolve_source(tmp_path / "bad.txt")


# ---------------------------------------------------------------------------- splitting and order


@needs_cifar
@pytest.mark.parametrize(("n_shards", "per_shard"), [(6, 5), (3, 4)])  # shard split; sample-index fallback
def test_ranks_and_workers_read_each_sample_once(tmp_path, n_shards, per_shard):
    spec, keys = make_shards(tmp_path, n_shards, per_shard)
    seen: list[str] = []
    for rank in range(2):
        cfg = DataConfig(spec, image_size=32, batch_size=4, num_workers=2, endless=False, augment=False)
        for batch in build_loader(cfg, rank=rank, world_size=2):
            seen += batch["key"]
    assert sorted(seen) == sorted(keys)

    # endless mode: the first epochs of all ranks hold each sample once (4 ranks > 3 shards: by index)
    world_size = 2 if n_shards == 6 else 4
    epoch0: list[str] = []
    for rank in range(world_size):
        ds = ImageStream(spec, train_transform(32), rank=rank, world_size=world_size)
        epoch0 += keys_of(take(ds, len(keys) // world_size))
    assert sorted(epoch0) == sorted(keys)


@needs_cifar
def test_file_sources_split_over_ranks_each_epoch(tmp_path):
    for key, _, jpg in tar_samples(CIFAR / "test-0000.tar", 12):
        (tmp_path / f"{key}.jpg").write_bytes(jpg)
    streams = [
        iter(ImageStream(tmp_path, train_transform(32), rank=r, world_size=3, seed=1)) for r in range(3)
    ]
    epochs = [[keys_of(take(s, 4)) for s in streams] for _ in range(2)]
    for epoch in epochs:
        assert len({k for part in epoch for k in part}) == 12
    assert epochs[0] != epochs[1]


@needs_cifar
def test_reshuffle_per_epoch_is_deterministic(tmp_path):
    spec, keys = make_shards(tmp_path, 6, 5)

    def run(seed: int) -> list[dict]:
        return take(ImageStream(spec, train_transform(32), seed=seed, shuffle_buffer=10), 3 * len(keys))

    a, b, c = run(0), run(0), run(1)
    epochs = [keys_of(a)[i * 30 : (i + 1) * 30] for i in range(3)]
    assert all(sorted(e) == sorted(keys) for e in epochs)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    assert keys_of(a) == keys_of(b)
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b, strict=True))
    assert keys_of(a) != keys_of(c)


# ---------------------------------------------------------------------------- exact resume


@needs_cifar
@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_resume(tmp_path, num_workers):
    spec, _ = make_shards(tmp_path, 7, 6, bad_key=tar_samples(CIFAR / "test-0000.tar", 9)[8][0])
    cfg = DataConfig(spec, image_size=32, batch_size=4, num_workers=num_workers, shuffle_buffer=8, seed=3)
    n = 24  # a worker reads 4-6 batches per epoch: the saved position lies past a whole epoch

    straight = take(build_loader(cfg), n)
    first_half = build_loader(cfg)
    head = take(first_half, n // 2)
    state = json.loads(json.dumps(first_half.state_dict()))
    resumed = build_loader(cfg)
    resumed.load_state_dict(state)
    tail = take(resumed, n - n // 2)

    for got, want in zip(head + tail, straight, strict=True):
        assert got["key"] == want["key"]
        assert torch.equal(got["label"], want["label"])
        assert torch.equal(got["image"], want["image"])
    assert state["batches"] == n // 2 and resumed.batches_consumed == n


@needs_cifar
def test_resume_with_state_of_another_rank_or_other_settings(tmp_path, caplog):
    spec, _ = make_shards(tmp_path, 4, 5)
    cfg = DataConfig(spec, image_size=32, batch_size=3)
    straight = take(build_loader(cfg, rank=1, world_size=2), 6)
    rank0 = build_loader(cfg, rank=0, world_size=2)
    take(rank0, 3)
    rank1 = build_loader(cfg, rank=1, world_size=2)
    with caplog.at_level(logging.WARNING, logger="titok.data"):
        rank1.load_state_dict(rank0.state_dict())
    assert "recomputed" in caplog.text
    assert [b["key"] for b in take(rank1, 3)] == [b["key"] for b in straight[3:]]

    other = build_loader(DataConfig(spec, image_size=32, batch_size=5), rank=0, world_size=2)
    with pytest.raises(DataError, match="batch_size 3 -> 5"):
        other.load_state_dict(rank0.state_dict())


# ---------------------------------------------------------------------------- holdout, limits


@needs_cifar
def test_holdout_is_disjoint_stable_and_independent_of_splitting(tmp_path):
    spec, keys = make_shards(tmp_path, 6, 5)

    def keys_for(split: str, holdout_seed: int = 0, world_size: int = 1) -> list[str]:
        out = []
        for rank in range(world_size):
            ds = ImageStream(
                spec,
                eval_transform(32),
                endless=False,
                holdout=5,
                split=split,
                holdout_seed=holdout_seed,
                rank=rank,
                world_size=world_size,
            )
            out += keys_of(ds)
        return sorted(out)

    val, train = keys_for("val"), keys_for("train")
    assert len(val) == 5 and not set(val) & set(train) and sorted(val + train) == sorted(keys)
    assert keys_for("val") == val and keys_for("val", world_size=2) == val
    assert keys_for("train", world_size=3) == train
    assert keys_for("val", holdout_seed=1) != val


def test_imagenette_holdout_500_is_fixed(imagenette: Path):
    shards = sorted(str(p) for p in imagenette.glob("train-*.tar"))
    a = ImageStream(shards, eval_transform(64), holdout=500, split="val", endless=False)
    b = ImageStream(shards[::-1], eval_transform(64), holdout=500, split="train")
    assert len(a.holdout_keys) == 500 and a.holdout_keys == b.holdout_keys


@needs_cifar
def test_max_samples_and_class_subset(tmp_path):
    expected = tar_samples(CIFAR / "test-0000.tar", 200)
    cats = list(ImageStream(CIFAR, eval_transform(32), endless=False, class_subset=[3], max_samples=4))
    assert keys_of(cats) == [k for k, lab, _ in expected if lab == 3][:4]

    spec, keys = make_shards(tmp_path, 4, 5)
    ds = ImageStream(spec, train_transform(32), max_samples=7, shuffle_buffer=4)
    stream = keys_of(take(ds, 21))
    assert sorted(stream[:7]) == sorted(stream[7:14]) == sorted(keys[:7])


# ---------------------------------------------------------------------------- damaged data


@needs_cifar
@pytest.mark.parametrize("num_workers", [0, 2])
def test_damaged_samples_are_skipped_counted_and_logged_once(tmp_path, caplog, num_workers):
    good = tar_samples(CIFAR / "test-0000.tar", 8)
    jpg = good[0][2]
    damaged = [
        ("g0.cls", b"1"), ("g0.jpg", jpg),
        ("cut.cls", b"2"), ("cut.jpg", jpg[: len(jpg) // 2]),
        ("nolabel.jpg", jpg),
        ("noimage.cls", b"3"),
        ("word.cls", b"cat"), ("word.jpg", jpg),
        ("cut2.cls", b"4"), ("cut2.jpg", b"\xff\xd8 not a jpeg"),
        ("g1.cls", b"5"), ("g1.jpg", jpg),
    ]  # fmt: skip
    write_tar(tmp_path / "a.tar", damaged)
    write_tar(
        tmp_path / "b.tar",
        [
            (f"{k}.{ext}", data)
            for k, lab, j in good[1:4]
            for ext, data in (("cls", str(lab).encode()), ("jpg", j))
        ],
    )
    cfg = DataConfig(str(tmp_path), image_size=32, batch_size=2, num_workers=num_workers, endless=False)
    loader = build_loader(cfg)
    with caplog.at_level(logging.WARNING, logger="titok.data"):
        keys = [k for _ in range(2) for batch in loader for k in batch["key"]]
    assert sorted(keys) == sorted(2 * (["g0", "g1"] + [k for k, _, _ in good[1:4]]))
    per_pass = {"bad_image": 2, "missing_label": 1, "missing_image": 1, "bad_label": 1}
    assert loader.skipped == {kind: 2 * n for kind, n in per_pass.items()}
    if num_workers == 0:  # worker processes log in their own process
        logged = [r.getMessage() for r in caplog.records if r.name == "titok.data"]
        assert len(logged) == 4 and all(any(f"({kind})" in m for m in logged) for kind in per_pass)

    relaxed = ImageStream(tmp_path / "a.tar", eval_transform(32), endless=False, require_labels=False)
    assert {s["key"]: s["label"] for s in relaxed} == {"g0": 1, "nolabel": -1, "g1": 5}


@needs_cifar
def test_truncated_tar_keeps_the_samples_before_the_damage(tmp_path):
    data = (CIFAR / "test-0000.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:30000])  # ends inside the 12th sample
    ds = ImageStream(tmp_path / "cut.tar", eval_transform(32), endless=False)
    assert keys_of(ds) == [k for k, _, _ in tar_samples(CIFAR / "test-0000.tar", 11)]
    assert ds.skipped == {"bad_shard": 1}


def _small_shard(path: Path, n: int) -> Path:
    """A tar of ``n`` samples (a 4x4 PNG and a .cls each), with its end-of-archive blocks."""
    members = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4), (i, 0, 0)).save(buf, format="PNG")
        members += [(f"s{i:03d}.png", buf.getvalue()), (f"s{i:03d}.cls", str(i % 3).encode())]
    return write_tar(path, members)


def test_a_shard_cut_inside_a_header_is_reported_truncated(tmp_path):
    from titok.data.sources import read_shard

    whole = _small_shard(tmp_path / "whole.tar", 20)
    index = read_shard(str(whole))
    assert len(index.records) == 20 and index.problems == []
    data = whole.read_bytes()
    # Member headers sit at 512-byte boundaries; cut 100 bytes into the header of sample 10's image.
    with tarfile.open(whole) as tar:
        header = [m for m in tar.getmembers() if m.name == "s010.png"][0].offset
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: header + 100])
    index = read_shard(str(cut))
    assert len(index.records) == 10
    kinds = [p[0] for p in index.problems]
    assert (
        kinds == ["bad_shard"] and "cut.tar" in index.problems[0][2] and "truncated" in index.problems[0][2]
    )
    # Without its end-of-archive blocks but cut between members: also truncated.
    no_end = tmp_path / "no_end.tar"
    no_end.write_bytes(data[:header])
    index = read_shard(str(no_end))
    assert len(index.records) == 10 and [p[0] for p in index.problems] == ["bad_shard"]
    # A garbled header in the middle: the samples after it are lost, and that is said.
    garbled = bytearray(data)
    garbled[header : header + 512] = b"\x01" * 512
    (tmp_path / "garbled.tar").write_bytes(bytes(garbled))
    index = read_shard(str(tmp_path / "garbled.tar"))
    assert len(index.records) <= 10 and index.problems and index.problems[0][0] == "bad_shard"
