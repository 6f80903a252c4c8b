"""Tokenizer training end to end on tiny 32 px models: every mode, exact resume, checkpoints,
export, recipe errors, damaged data and the ``titok train`` command.

Data: a small tar shard made of the first Imagenette samples (the shared data), repeated with
augmentation off, so a few dozen steps on a fixed seed show the loss falling.
"""

from __future__ import annotations

import io
import json
import logging
import statistics
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from titok.errors import ConfigError
from titok.loading import load_vqgan
from titok.models.titok import TiTok
from titok.training import Recipe, TrainResult, load_recipe, make_task, train
from titok.training import checkpointing as ckpt

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


def _copy_samples(source: Path, n: int) -> list[tuple[str, bytes]]:
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


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def shard(imagenette: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shard of 8 Imagenette images (one batch)."""
    folder = tmp_path_factory.mktemp("data")
    return _write_tar(folder / "small-0000.tar", _copy_samples(imagenette / "train-0000.tar", 8))


def _shard_images(shard: Path, size: int) -> torch.Tensor:
    """The images of a shard as one batch (N, 3, size, size) in [0, 1], resized and center-cropped."""
    from titok.images import pil_to_tensor, resize_center_crop

    with tarfile.open(shard) as tar:
        files = [tar.extractfile(m) for m in tar if m.name.endswith(".jpg")]
        pictures = [Image.open(io.BytesIO(f.read())).convert("RGB") for f in files if f is not None]
    return torch.stack([pil_to_tensor(resize_center_crop(img, size)) for img in pictures])


def result_recipe(result: TrainResult) -> Recipe:
    """The recipe a run was trained with (its ``recipe.yaml``)."""
    return load_recipe(result.output_dir / "recipe.yaml")


def _train(recipe: str, mode: str, out: Path, *overrides: str) -> TrainResult:
    loaded = load_recipe(RECIPES / f"{recipe}.yaml", [*FAST, *overrides], mode=mode)
    return train(make_task(loaded), output_dir=out)


def _losses(result: TrainResult, key: str = "total") -> list[float]:
    return [logs[key] for logs in result.history]


def _assert_falls(losses: list[float], ratio: float, n: int = 3) -> None:
    first, last = statistics.mean(losses[:n]), statistics.mean(losses[-n:])
    assert last < ratio * first, f"loss did not fall enough: first {losses[:n]}, last {losses[-n:]}"


# ---------------------------------------------------------------------------- each mode


@pytest.fixture(scope="module")
def vqgan_run(shard: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A tiny VQGAN teacher (20 steps); its export is the teacher of the stage-1/2 runs."""
    out = tmp_path_factory.mktemp("vqgan")
    return _train("tiny_vqgan", "vqgan", out, f"data.train={shard}", "training.max_train_steps=20")


@pytest.fixture(scope="module")
def stage1_run(vqgan_run: TrainResult, shard: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("stage1")
    return _train(
        "tiny_stage1",
        "stage1",
        out,
        f"data.train={shard}",
        f"teacher={vqgan_run.export_dir}",
        "training.max_train_steps=20",
    )


def test_vqgan_loss_falls_and_export_is_a_teacher(vqgan_run: TrainResult, shard: Path) -> None:
    assert vqgan_run.step == 20 and vqgan_run.start_step == 0
    _assert_falls(_losses(vqgan_run), 0.7)
    teacher = load_vqgan(vqgan_run.export_dir)
    assert teacher.config.codebook_size == 256
    codes = teacher.encode(torch.rand(2, 3, 32, 32))
    assert codes.shape == (2, 8, 8)


def test_stage1_learns_the_teacher_codes(stage1_run: TrainResult) -> None:
    _assert_falls(_losses(stage1_run), 0.8)
    accuracy = _losses(stage1_run, "code_accuracy")
    assert statistics.mean(accuracy[-3:]) > statistics.mean(accuracy[:3])
    model = TiTok.from_pretrained(stage1_run.export_dir)
    assert model.config.decoder_head == "proxy" and model.config.num_proxy_codes == 256


def test_stage2_trains_the_decoder_only(
    vqgan_run: TrainResult, stage1_run: TrainResult, shard: Path, tmp_path: Path
) -> None:
    result = _train(
        "tiny_stage2",
        "stage2",
        tmp_path,
        f"data.train={shard}",
        f"teacher={vqgan_run.export_dir}",
        f"init_from={stage1_run.export_dir}",
        "optimizer.learning_rate=2e-4",
        "training.max_train_steps=20",
        "training.use_ema=false",  # the export then holds the trained weights themselves
    )
    _assert_falls(_losses(result), 0.95)  # measured: 0.92 in 20 steps
    # the export reconstructs the images it was tuned on better than the model it started from
    # (eval mode, no augmentation: deterministic; measured 0.0560 -> 0.0519)
    from accelerate import Accelerator

    images = _shard_images(shard, 32)
    start_model = make_task(result_recipe(result)).build_model(Accelerator(cpu=True)).eval()
    tuned = TiTok.from_pretrained(result.export_dir).eval()
    with torch.no_grad():
        before, after = (F.mse_loss(m.decode(m.encode(images)), images).item() for m in (start_model, tuned))
    assert after < 0.95 * before, f"stage 2 did not improve the reconstructions: {before} -> {after}"
    start = TiTok.from_pretrained(stage1_run.export_dir).state_dict()
    end = TiTok.from_pretrained(result.export_dir)
    assert end.config.decoder_head == "vqgan"
    trained = end.state_dict()
    for name, value in start.items():
        frozen = name.startswith(("encoder.", "quantize.", "latent_tokens"))
        if frozen:
            assert torch.equal(trained[name], value), f"frozen {name} changed"
    changed = [n for n in start if n.startswith("decoder.") and not torch.equal(trained[n], start[n])]
    assert changed, "the decoder did not train"
    teacher = load_vqgan(vqgan_run.export_dir).state_dict()
    assert not torch.equal(trained["pixel_decoder.conv_out.weight"], teacher["decoder.conv_out.weight"])


def test_single_stage_vq_loss_falls_and_logs(shard: Path, tmp_path: Path) -> None:
    result = _train(
        "tiny_single_stage",
        "single_stage",
        tmp_path,
        f"data.train={shard}",
        "training.max_train_steps=15",
        "experiment.image_every=15",
        "experiment.num_images=4",
    )
    _assert_falls(_losses(result), 0.5)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15]
    for key in ("total", "reconstruction", "lr/model", "grad_norm/model", "perf/images_per_second"):
        assert all(key in r for r in rows), key
    assert rows[-1]["lr/model"] < rows[0]["lr/model"], "cosine decay"
    assert list((tmp_path / "logs").glob("events.out.tfevents.*")), "no TensorBoard file"
    assert (tmp_path / "images" / "step-00000015.png").is_file()


def test_single_stage_vae_loss_falls_with_kl(shard: Path, tmp_path: Path) -> None:
    result = _train(
        "tiny_single_stage_vae",
        "single_stage",
        tmp_path,
        f"data.train={shard}",
        "training.max_train_steps=15",
    )
    _assert_falls(_losses(result), 0.5)
    assert all(logs["kl_raw"] > 0 for logs in result.history)
    model = TiTok.from_pretrained(result.export_dir)
    assert model.is_vae
    images = torch.rand(2, 3, 32, 32)
    assert model.reconstruct(images).shape == images.shape


# ---------------------------------------------------------------------------- resume


def _same(a: Any, b: Any, where: str = "") -> None:
    """Nested states (dicts, lists, tensors, numbers) are identical."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs (max {(a.double() - b.double()).abs().max():.3g})"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _checkpoint_state(folder: Path) -> dict[str, Any]:
    state: dict[str, Any] = {p.name: ckpt.load_tensors(p) for p in folder.glob("*.safetensors")}
    state.update({p.name: ckpt.load_torch(p) for p in folder.glob("*.pt")})
    return state


@pytest.mark.parametrize("mode", ["vqgan", "stage1"])
def test_resume_continues_exactly(mode: str, vqgan_run: TrainResult, shard: Path, tmp_path: Path) -> None:
    """N steps straight == N/2 steps, stop, ``resume`` to N: weights, EMA, optimizers, RNG, data."""
    if mode == "vqgan":  # two optimizers: the discriminator starts mid-run, LeCam on
        name, extra = "tiny_vqgan", ["losses.discriminator_start=2", "training.gradient_accumulation_steps=2"]
    else:  # cached teacher codes (task state that is not saved) and dropout-free ViT
        name, extra = "tiny_stage1", [f"teacher={vqgan_run.export_dir}", "teacher_codes=cache"]
    common = [
        f"data.train={shard}",
        "training.batch_size=3",  # batches straddle epochs: the data position matters
        "training.max_train_steps=6",
        "experiment.image_every=2",
        *extra,
    ]
    straight = _train(name, mode, tmp_path / "straight", *common)
    first = _train(name, mode, tmp_path / "split", *common, "training.stop_at_step=3")
    assert first.step == 3 and first.export_dir is None
    with pytest.raises(ConfigError, match="--resume"):
        _train(name, mode, tmp_path / "split", *common)
    loaded = load_recipe(RECIPES / f"{name}.yaml", [*FAST, *common], mode=mode)
    second = train(make_task(loaded), resume=True, output_dir=tmp_path / "split")
    assert second.start_step == 3 and second.step == 6

    _same(_checkpoint_state(straight.checkpoint), _checkpoint_state(second.checkpoint), mode)
    _same(straight.history[3:], second.history, "logs")
    if mode == "vqgan":
        state = _checkpoint_state(second.checkpoint)
        assert set(state["state.pt"]["optimizers"]) == {"model", "discriminator"}
        assert "lecam" in state["rank-0.pt"]["task"]
    for part in ("config.json", "model.safetensors"):
        assert (straight.export_dir / part).read_bytes() == (second.export_dir / part).read_bytes()


# ---------------------------------------------------------------------------- checkpoints, export


def test_checkpoints_are_atomic_pruned_and_export_reconstructs(shard: Path, tmp_path: Path) -> None:
    result = _train(
        "tiny_single_stage",
        "single_stage",
        tmp_path,
        f"data.train={shard}",
        "training.max_train_steps=8",
        "experiment.save_every=2",
        "experiment.keep_last=2",
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in names if n.startswith("checkpoint-")] == ["checkpoint-00000006", "checkpoint-00000008"]
    assert not [n for n in names if n.startswith(".")], f"temporary entries left: {names}"
    assert not list(tmp_path.rglob("*.tmp"))
    meta = ckpt.read_meta(result.checkpoint)
    assert meta["step"] == 8 and meta["mode"] == "single_stage" and meta["world_size"] == 1
    assert (tmp_path / "recipe.yaml").is_file()

    model = TiTok.from_pretrained(result.export_dir).eval()
    images = torch.rand(2, 3, 32, 32)
    tokens = model.encode(images)
    assert tokens.shape == (2, 16) and tokens.dtype == torch.long
    rec = model.reconstruct(images)
    assert rec.shape == images.shape and torch.isfinite(rec).all()


def test_export_writes_any_checkpoint_without_the_training_data(shard: Path, tmp_path: Path, capsys) -> None:
    """``titok train export RUN --step N``: the model of checkpoint N, as the run would have exported
    it had it ended there (a run stopped at ``stop_at_step`` writes no export of its own)."""
    import yaml

    from titok.cli import main
    from titok.training.export import export_run

    run = tmp_path / "run"
    common = [
        f"data.train={shard}",
        "training.max_train_steps=6",
        "experiment.save_every=2",
        "training.use_ema=true",
    ]
    full = _train("tiny_single_stage", "single_stage", run, *common)
    stopped = _train(
        "tiny_single_stage", "single_stage", tmp_path / "stopped", *common, "training.stop_at_step=4"
    )
    assert stopped.export_dir is None

    # The last checkpoint exports byte for byte what the run exported (EMA weights included).
    again = export_run(run, directory=tmp_path / "again")
    for part in ("config.json", "model.safetensors"):
        assert (again / part).read_bytes() == (full.export_dir / part).read_bytes()
    # Step 4 of the full run == the end of the run stopped there (same seed, same data).
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["data"]["train"] = str(tmp_path / "gone")  # the data is not needed to export
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "export", str(run), "--step", "4"]) == 0
    assert str(run / "export-4") in capsys.readouterr().out
    assert main(["train", "export", str(tmp_path / "stopped")]) == 0  # its latest: step 4
    a = TiTok.from_pretrained(run / "export-4").state_dict()
    b = TiTok.from_pretrained(tmp_path / "stopped" / "export-4").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], v) for k, v in TiTok.from_pretrained(again).state_dict().items())

    assert main(["train", "export", str(run), "--step", "5"]) == 2
    assert "no checkpoint at step 5 (steps saved: 2, 4, 6)" in capsys.readouterr().err
    assert main(["train", "export", str(tmp_path)]) == 2
    assert "not a training run folder (no recipe.yaml)" in capsys.readouterr().err


def test_commit_replaces_a_partial_staging_folder(tmp_path: Path) -> None:
    stale = ckpt.prepare_staging(tmp_path, 5)
    (stale / "junk.bin").write_bytes(b"half written")
    staging = ckpt.prepare_staging(tmp_path, 5)  # a crash left the old one; it is cleared
    assert not (staging / "junk.bin").exists()
    ckpt.save_tensors({"w": torch.ones(2)}, staging / "model.safetensors")
    assert ckpt.latest_checkpoint(tmp_path) is None, "an unsealed folder must not count"
    final = ckpt.commit(tmp_path, 5, {"world_size": 1, "mode": "vqgan"}, keep_last=1)
    assert ckpt.latest_checkpoint(tmp_path) == final and not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000005"]

    # Leftovers of saves cut short: a staging folder, a replaced checkpoint (its successor is
    # there) and a checkpoint moved aside whose replacement never arrived.
    ckpt.prepare_staging(tmp_path, 9)
    (tmp_path / "checkpoint-00000005.old").mkdir()
    aside = tmp_path / "checkpoint-00000007.old"
    aside.mkdir()
    ckpt.write_json({"format": ckpt.FORMAT, "step": 7}, aside / "meta.json")
    removed = ckpt.clean_interrupted(tmp_path)
    assert sorted(p.name for p in removed) == [".checkpoint-00000009.tmp", "checkpoint-00000005.old"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-00000005", "checkpoint-00000007"]


def test_the_one_schedule_warms_up_then_decays_to_the_end_rate() -> None:
    """Every training loop (modes, classifier, plateau benchmark) takes its rate from lr_factor."""
    from titok.training.optim import lr_factor

    assert lr_factor(0, 10, 110, 1.0, 0.0) == 0.0 and lr_factor(5, 10, 110, 1.0, 0.0) == pytest.approx(0.5)
    assert lr_factor(10, 10, 110, 1.0, 0.0) == pytest.approx(1.0)
    assert lr_factor(60, 10, 110, 1.0, 0.0) == pytest.approx(0.5)  # half-way down the cosine
    assert lr_factor(110, 10, 110, 2.0, 0.5) == pytest.approx(0.25) == lr_factor(500, 10, 110, 2.0, 0.5)
    assert lr_factor(60, 10, 110, 1.0, 0.0, "constant") == 1.0


def test_embedding_lr_scale_gives_the_tokens_and_embeddings_their_own_rate(
    shard: Path, tmp_path: Path
) -> None:
    from titok.models.presets import tokenizer_config
    from titok.training.optim import parameter_groups

    model = TiTok(
        tokenizer_config("titok-tiny-64", encoder_width=32, decoder_width=32, decoder_head="pixels")
    )
    names = {id(p): n for n, p in model.named_parameters()}
    groups = parameter_groups(model, 1e-4, 2e-4, embedding_lr_scale=10.0)
    assert [g["lr"] for g in groups] == [2e-4, 2e-4, pytest.approx(2e-3)]
    expected = [
        f"{part}.{name}"
        for part in ("encoder", "decoder")
        for name in ("positional_embedding", "class_embedding", "latent_token_positional_embedding")
    ]
    assert sorted(names[id(p)] for p in groups[2]["params"]) == sorted(
        [*expected, "decoder.mask_token", "latent_tokens"]
    )
    assert groups[2]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(names)
    assert len(parameter_groups(model, 1e-4, 2e-4)) == 2  # the authors' single rate: two groups, as before

    result = _train(
        "tiny_single_stage",
        "single_stage",
        tmp_path,
        f"data.train={shard}",
        "training.max_train_steps=3",
        "optimizer.embedding_lr_scale=10",
    )
    saved = _checkpoint_state(result.checkpoint)["state.pt"]["optimizers"]["model"]["param_groups"]
    assert len(saved) == 3 and saved[0]["lr"] > 0
    assert saved[2]["lr"] == pytest.approx(10 * saved[0]["lr"])  # one schedule, scaled
    with pytest.raises(ConfigError, match=r"'optimizer\.embedding_lr_scale' must be > 0, got 0"):
        load_recipe(RECIPES / "tiny_single_stage.yaml", ["optimizer.embedding_lr_scale=0"])


# ---------------------------------------------------------------------------- recipes and errors


def test_latent_centering_recipes_refuse_ema_and_single_image_batches() -> None:
    single = RECIPES / "tiny_single_stage.yaml"
    with pytest.raises(ConfigError, match="latent_centering with training.use_ema"):
        load_recipe(single, ["model.latent_centering=true"])
    with pytest.raises(ConfigError, match=r"batch_size >= 2, got 1"):
        load_recipe(
            single, ["model.latent_centering=true", "training.use_ema=false", "training.batch_size=1"]
        )
    ok = load_recipe(single, ["model.latent_centering=true", "training.use_ema=false"])
    assert ok.model["latent_centering"] is True
    # stage 2 keeps the stage-1 running mean fixed, so averaging its weights is fine
    load_recipe(RECIPES / "tiny_stage2.yaml", ["model.latent_centering=true", "init_from=x"], mode="stage2")


def test_unknown_keys_and_bad_values_name_the_key(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("mode: vqgan\ndata: {train: x.tar, image_size: 32}\ntraining: {batch_sise: 4}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'training\.batch_sise'") as info:
        load_recipe(recipe)
    assert str(recipe) in str(info.value)

    good = RECIPES / "tiny_vqgan.yaml"
    with pytest.raises(ConfigError, match=r"unknown key 'optimizer\.lr'"):
        load_recipe(good, ["optimizer.lr=1e-3"])
    with pytest.raises(ConfigError, match=r"unknown key 'trainig'"):
        load_recipe(good, ["trainig.batch_size=4"])
    with pytest.raises(ConfigError, match=r"unknown key 'model\.widht'"):
        load_recipe(good, ["model.widht=4"])
    with pytest.raises(ConfigError, match=r"unknown key 'losses\.perceptual'"):
        load_recipe(good, ["losses.perceptual=none"])
    with pytest.raises(ConfigError, match=r"'training\.batch_size' expects int, got 'four'"):
        load_recipe(good, ["training.batch_size=four"])
    with pytest.raises(ConfigError, match=r"'training\.use_ema' expects bool"):
        load_recipe(good, ["training.use_ema=3"])
    with pytest.raises(ConfigError, match=r"'training\.batch_size' must be > 0"):
        load_recipe(good, ["training.batch_size=0"])
    with pytest.raises(ConfigError, match="mixed_precision"):
        load_recipe(good, ["training.mixed_precision=fp8"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_recipe(good, ["training.batch_size"])
    with pytest.raises(ConfigError, match="for mode 'vqgan', not 'stage1'"):
        load_recipe(good, mode="stage1")
    # Accepted conversions: ints for floats, YAML strings for floats, env expansion.
    loaded = load_recipe(good, ["optimizer.learning_rate=1", "optimizer.epsilon='1e-6'"])
    assert loaded.optimizer.learning_rate == 1.0 and loaded.optimizer.epsilon == 1e-6


def test_missing_teacher_and_cache_with_augmentation_are_config_errors(
    vqgan_run: TrainResult, shard: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="teacher_codes: cache needs data.augment: false"):
        _train(
            "tiny_stage1",
            "stage1",
            tmp_path / "a",
            f"data.train={shard}",
            f"teacher={vqgan_run.export_dir}",
            "teacher_codes=cache",
            "data.augment=true",
        )
    with pytest.raises(ConfigError, match="init_from"):
        _train("tiny_stage2", "stage2", tmp_path / "b", f"data.train={shard}", "init_from=")


# ---------------------------------------------------------------------------- damaged data


def test_corrupt_sample_is_skipped_and_counted(imagenette: Path, tmp_path: Path, caplog) -> None:
    good = _copy_samples(imagenette / "train-0000.tar", 3)
    bad = [("broken_0001.cls", b"0"), ("broken_0001.jpg", b"\xff\xd8\xff not really a jpeg")]
    data = _write_tar(tmp_path / "damaged.tar", good[:2] + bad + good[2:])
    keys: list[str] = []
    loaded = load_recipe(
        RECIPES / "tiny_vqgan.yaml",
        [*FAST, f"data.train={data}", "training.batch_size=3", "training.max_train_steps=2"],
        mode="vqgan",
    )
    task = make_task(loaded)
    step = task.train_step

    def recording_step(batch, ctx):  # noqa: ANN001, ANN202 - thin test wrapper
        keys.extend(batch["key"])
        return step(batch, ctx)

    task.train_step = recording_step  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        result = train(task, output_dir=tmp_path / "run")
    assert result.step == 2 and len(keys) == 6
    assert "broken_0001" not in keys
    assert result.skipped.get("bad_image", 0) >= 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["data/skipped_bad_image"] == result.skipped["bad_image"]
    # Missing perceptual weights (none on this machine, or present): said at most once per run.
    assert sum("perceptual loss disabled" in r.getMessage() for r in caplog.records) <= 1


# ---------------------------------------------------------------------------- command line


def test_cli_train_stage1_and_bad_override(
    vqgan_run: TrainResult, shard: Path, tmp_path: Path, capsys
) -> None:
    from titok.cli import main

    out = tmp_path / "run"
    args = [
        "train",
        "stage1",
        "--config",
        "tiny_stage1",
        f"data.train={shard}",
        f"teacher={vqgan_run.export_dir}",
        "training.max_train_steps=3",
        "experiment.progress_bar=true",
        "experiment.image_every=0",
        "--output-dir",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "trained stage1 to step 3" in printed.out and str(out / "export") in printed.out
    # Asked for, the bar is still drawn only on a terminal: pytest's capture is not one.
    assert "3/3" not in printed.err and "\r" not in printed.err, printed.err
    assert TiTok.from_pretrained(out / "export").config.decoder_head == "proxy"

    assert main(args[:4] + ["training.nope=1"]) == 2
    assert "unknown key 'training.nope'" in capsys.readouterr().err
    assert main(args[:4] + ["training.batch_size=many"]) == 2
    assert "'training.batch_size' expects int" in capsys.readouterr().err
    assert main(args) == 2, "a second run into a folder with checkpoints needs --resume"
    assert main([*args, "--resume"]) == 0  # already at max_train_steps: re-exports only
    assert main(["train", "stage1", "--config", "no_such_recipe"]) == 2
    assert "no such recipe file" in capsys.readouterr().err


# ---------------------------------------------------------------------------- prefixes in every mode


def test_prefix_training_in_stage1_and_stage2_with_a_new_tail_token(
    vqgan_run: TrainResult, stage1_run: TrainResult, shard: Path, tmp_path: Path
) -> None:
    """Stage 1 on prefixes exports a variable-length proxy model; stage 2 on prefixes from the
    fixed-length stage-1 export adds a fresh tail token and keeps the frozen encoder."""
    s1 = _train(
        "tiny_stage1",
        "stage1",
        tmp_path / "s1",
        f"data.train={shard}",
        f"teacher={vqgan_run.export_dir}",
        "training.max_train_steps=4",
        "prefix.enabled=true",
    )
    proxy = TiTok.from_pretrained(s1.export_dir)
    assert proxy.config.variable_length
    assert proxy.decode_proxy_codes(proxy.encode(torch.rand(2, 3, 32, 32), num_tokens=3)).shape == (2, 8, 8)
    s2 = _train(
        "tiny_stage2",
        "stage2",
        tmp_path / "s2",
        f"data.train={shard}",
        f"teacher={vqgan_run.export_dir}",
        f"init_from={stage1_run.export_dir}",
        "training.max_train_steps=4",
        "training.use_ema=false",
        "prefix.enabled=true",
        "prefix.per=batch",
        "model.hidden_tail=token",
    )
    end = TiTok.from_pretrained(s2.export_dir)
    assert end.config.variable_length and end.decoder.tail_token is not None
    start = TiTok.from_pretrained(stage1_run.export_dir).state_dict()
    trained = end.state_dict()
    for name in start:
        if name.startswith(("encoder.", "quantize.", "latent_tokens")):
            assert torch.equal(trained[name], start[name]), name
    assert end.reconstruct(torch.rand(2, 3, 32, 32), num_tokens=5).shape == (2, 3, 32, 32)


def test_prefix_training_with_vae_tokens(shard: Path, tmp_path: Path) -> None:
    result = _train(
        "tiny_single_stage_vae",
        "single_stage",
        tmp_path,
        f"data.train={shard}",
        "training.max_train_steps=3",
        "prefix.enabled=true",
    )
    model = TiTok.from_pretrained(result.export_dir)
    assert model.config.variable_length and model.is_vae
    assert model.encode(torch.rand(1, 3, 32, 32), num_tokens=2).shape == (1, 2, model.config.token_size)


def test_any_task_runs_through_the_one_engine_and_resumes(tmp_path: Path) -> None:
    """A mode the library does not ship (a linear fit on generated points) needs only the Task
    methods: its own loader, device move and preview, trained and resumed exactly by train()."""
    from titok.training import Task, recipe_from_dict

    class Points:
        skipped: dict[str, int] = {}

        def __init__(self) -> None:
            self.position = 0

        def __iter__(self):
            while True:
                g = torch.Generator().manual_seed(self.position)
                self.position += 1
                x = torch.randn(16, 3, generator=g)
                yield {"x": x, "y": x @ torch.tensor([1.0, -2.0, 0.5])}

        def state_dict(self) -> dict[str, int]:
            return {"position": self.position}

        def load_state_dict(self, state: dict[str, int]) -> None:
            self.position = state["position"]

    class LineTask(Task):
        mode = "single_stage"  # checkpoints record the mode; any known one serves

        def build(self, accelerator):
            return {"model": torch.nn.Linear(3, 1, bias=False)}

        def loader(self, rank, world_size):
            return Points()

        def to_device(self, batch, device):
            return {k: v.to(device) for k, v in batch.items()}

        def train_step(self, batch, ctx):
            loss = (ctx.module("model")(batch["x"]).squeeze(-1) - batch["y"]).pow(2).mean()
            ctx.optimize("model", loss)
            return {"total": loss.detach()}

        def preview_grid(self, model, batch, count):
            return []

        def export(self, model, directory):
            directory.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), directory / "line.pt")
            return directory

    def recipe(steps: int):
        return recipe_from_dict(
            {
                "mode": "single_stage",
                "data": {"train": "generated points"},  # the recipe check wants a source; unused here
                "training": {
                    "max_train_steps": 40,
                    "stop_at_step": steps,
                    "batch_size": 16,
                    "use_ema": False,
                    "mixed_precision": "no",
                },
                "optimizer": {"learning_rate": 0.2, "weight_decay": 0.0},
                "lr_scheduler": {"warmup_steps": 0},
                "experiment": {"save_every": 10, "image_every": 0, "log_every": 10, "progress_bar": False},
            }
        )

    straight = train(LineTask(recipe(40)), output_dir=tmp_path / "a")
    assert straight.history[-1]["total"] < 0.1 * straight.history[0]["total"]
    train(LineTask(recipe(20)), output_dir=tmp_path / "b")
    resumed = train(LineTask(recipe(40)), resume=True, output_dir=tmp_path / "b")
    assert resumed.start_step == 20
    a = torch.load(straight.export_dir / "line.pt")["weight"]
    b = torch.load(resumed.export_dir / "line.pt")["weight"]
    assert torch.equal(a, b)


def test_the_recipe_data_section_is_the_loader_config_under_the_same_names() -> None:
    """One definition of the data settings: every ``data`` key of a recipe (but ``train``, the
    loader's ``path``) is a :class:`DataConfig` field of the same type and default, passed on
    by name, so a setting cannot mean one thing in a recipe and another in the loader."""
    import dataclasses
    import typing

    from titok.data import DataConfig
    from titok.training.config import DataSection

    loader = {f.name: f for f in dataclasses.fields(DataConfig)}
    hints_section = typing.get_type_hints(DataSection)
    hints_loader = typing.get_type_hints(DataConfig)
    for f in dataclasses.fields(DataSection):
        if f.name == "train":
            assert hints_section["train"] == hints_loader["path"] | None
            continue
        assert f.name in loader, f"data.{f.name} is not a DataConfig field"
        if f.name == "image_size":  # None in a recipe: the model's resolution
            assert hints_section[f.name] == hints_loader[f.name] | None
            continue
        assert hints_section[f.name] == hints_loader[f.name], f.name
        assert f.default == loader[f.name].default, f"data.{f.name}: default differs from DataConfig's"

    settings = {"num_workers": 0, "augment": False, "shuffle_buffer": 7, "holdout": 3, "holdout_seed": 5,
                "max_samples": 9, "class_subset": [1, 2], "require_labels": False, "fast_jpeg": False}  # fmt: skip
    recipe = load_recipe(
        RECIPES / "tiny_stage1.yaml",
        ["data.train=somewhere", "training.batch_size=4", "training.seed=11",
         *(f"data.{k}={json.dumps(v)}" for k, v in settings.items())],
        mode="stage1",
    )  # fmt: skip
    task = make_task(recipe)
    task.image_size = 32
    config = task.data_config()
    assert config.path == "somewhere" and config.image_size == 32 and config.endless
    assert (config.batch_size, config.seed) == (4, 11)
    assert {k: getattr(config, k) for k in settings} == settings
