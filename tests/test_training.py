"""Tokenizer training end to end on tiny 32 px models: every mode, exact resume, checkpoints
and export (the runs and helpers: tests/training_runs.py)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.training_runs import (
    FAST,
    RECIPES,
    assert_falls,
    losses_of,
    result_recipe,
    shard_images,
    train_recipe,
)
from titok.errors import ConfigError
from titok.loading import load_vqgan
from titok.models.titok import TiTok
from titok.training import TrainResult, load_recipe, make_task, train
from titok.training import checkpointing as ckpt

# ---------------------------------------------------------------------------- each mode


@pytest.mark.device
def test_vqgan_loss_falls_and_export_is_a_teacher(vqgan_run: TrainResult, shard: Path) -> None:
    assert vqgan_run.step == 20 and vqgan_run.start_step == 0
    assert_falls(losses_of(vqgan_run), 0.7)
    teacher = load_vqgan(vqgan_run.export_dir)
    assert teacher.config.codebook_size == 256
    codes = teacher.encode(torch.rand(2, 3, 32, 32))
    assert codes.shape == (2, 8, 8)


@pytest.mark.device
def test_stage1_learns_the_teacher_codes(stage1_run: TrainResult) -> None:
    assert_falls(losses_of(stage1_run), 0.8)
    accuracy = losses_of(stage1_run, "code_accuracy")
    assert statistics.mean(accuracy[-3:]) > statistics.mean(accuracy[:3])
    model = TiTok.from_pretrained(stage1_run.export_dir)
    assert model.config.decoder_head == "proxy" and model.config.num_proxy_codes == 256


def test_stage2_trains_the_decoder_only(
    vqgan_run: TrainResult, stage1_run: TrainResult, shard: Path, tmp_path: Path
) -> None:
    result = train_recipe(
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
    assert_falls(losses_of(result), 0.95)  # measured: 0.92 in 20 steps
    # the export reconstructs the images it was tuned on better than the model it started from
    # (eval mode, no augmentation: deterministic; measured 0.0560 -> 0.0519)
    from accelerate import Accelerator

    images = shard_images(shard, 32)
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


@pytest.mark.device
def test_single_stage_vq_loss_falls_and_logs(shard: Path, tmp_path: Path) -> None:
    result = train_recipe(
        "tiny_single_stage",
        "single_stage",
        tmp_path,
        f"data.train={shard}",
        "training.max_train_steps=15",
        "experiment.image_every=15",
        "experiment.num_images=4",
    )
    assert_falls(losses_of(result), 0.5)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15]
    for key in ("total", "reconstruction", "lr/model", "grad_norm/model", "perf/images_per_second"):
        assert all(key in r for r in rows), key
    assert rows[-1]["lr/model"] < rows[0]["lr/model"], "cosine decay"
    assert list((tmp_path / "logs").glob("events.out.tfevents.*")), "no TensorBoard file"
    assert (tmp_path / "images" / "step-00000015.png").is_file()


def test_single_stage_vae_loss_falls_with_kl(shard: Path, tmp_path: Path) -> None:
    result = train_recipe(
        "tiny_single_stage_vae",
        "single_stage",
        tmp_path,
        f"data.train={shard}",
        "training.max_train_steps=15",
    )
    assert_falls(losses_of(result), 0.5)
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


@pytest.mark.device
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
    straight = train_recipe(name, mode, tmp_path / "straight", *common)
    first = train_recipe(name, mode, tmp_path / "split", *common, "training.stop_at_step=3")
    assert first.step == 3 and first.export_dir is None
    with pytest.raises(ConfigError, match="--resume"):
        train_recipe(name, mode, tmp_path / "split", *common)
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
    result = train_recipe(
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
    full = train_recipe("tiny_single_stage", "single_stage", run, *common)
    stopped = train_recipe(
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

    result = train_recipe(
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
