"""Faults in training: a diverging run stops before writing non-finite weights; bad learning
rates are one-line recipe errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from titok.cli import main
from titok.errors import CheckpointError, ConfigError
from titok.training import checkpointing as ckpt
from titok.training import load_recipe, make_task, train
from titok.training.step import TrainingDiverged

RECIPES = Path(__file__).resolve().parents[1] / "src" / "titok" / "recipes"
QUIET = [
    "experiment.progress_bar=false",
    "experiment.image_every=0",
    "experiment.log_every=1",
    "experiment.save_every=2",
    "data.augment=false",
    "losses.perceptual_loss=none",
    "losses.perceptual_weight=0",
    "losses.discriminator_start=100000",
    "training.batch_size=8",
    "training.max_train_steps=30",
    "model.encoder_width=32",
    "model.decoder_width=32",
    "model.encoder_heads=2",
    "model.decoder_heads=2",
    "model.image_size=16",
    "data.image_size=16",
    "training.use_ema=false",
]


def _recipe(pictures: Path, *extra: str):
    return load_recipe(
        RECIPES / "tiny_single_stage.yaml", [*QUIET, f"data.train={pictures}", *extra], mode="single_stage"
    )


def test_a_diverging_run_stops_naming_the_step_and_writes_no_nan(pictures: Path, tmp_path: Path) -> None:
    recipe = _recipe(pictures, "optimizer.learning_rate=1e6", "lr_scheduler.warmup_steps=0")
    with pytest.raises(
        TrainingDiverged, match=r"step \d+: the model (loss|gradient norm) is (nan|inf).*intact"
    ):
        train(make_task(recipe), output_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "export").exists()
    for folder in (tmp_path / "run").glob("checkpoint-*"):
        for value in ckpt.load_tensors(folder / "model.safetensors").values():
            assert value.isfinite().all()


def test_skip_counts_non_finite_steps(pictures: Path, tmp_path: Path, monkeypatch) -> None:
    from titok.training.tasks import single_stage

    real = single_stage.SingleStageTask.reconstruct
    calls = {"n": 0}

    def every_third_nan(self, model, images, lengths=None):  # noqa: ANN001, ANN202
        calls["n"] += 1
        out = real(self, model, images, lengths)
        if calls["n"] % 3 == 0:
            out.reconstructions = out.reconstructions * float("nan")
        return out

    monkeypatch.setattr(single_stage.SingleStageTask, "reconstruct", every_third_nan)
    recipe = _recipe(pictures, "training.max_train_steps=9", "training.on_nonfinite=skip")
    result = train(make_task(recipe), output_dir=tmp_path / "run")
    assert result.export_dir is not None
    logged = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert '"nonfinite_skipped/model": 3.0' in logged[-1]
    for value in ckpt.load_tensors(result.checkpoint / "model.safetensors").values():
        assert value.isfinite().all()


@pytest.mark.parametrize("value", ["-1e-4", ".nan", ".inf"])
def test_bad_learning_rates_are_one_line_errors(capsys, value: str, pictures: Path) -> None:
    with pytest.raises(ConfigError, match="optimizer.learning_rate"):
        _recipe(pictures, f"optimizer.learning_rate={value}")
    code = main(["train", "single-stage", "-c", "tiny_single_stage", f"optimizer.learning_rate={value}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "optimizer.learning_rate" in err


def test_nothing_non_finite_is_exported(pictures: Path) -> None:
    from titok.training.step import check_finite as _check_finite

    module = torch.nn.Linear(2, 2)
    _check_finite(module, "model", 3)
    with torch.no_grad():
        module.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"step 3: model.weight holds non-finite values"):
        _check_finite(module, "model", 3)


@pytest.mark.parametrize("damage", ["model.safetensors", "state.pt", "meta.json", "rank-0.pt"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(
    pictures: Path, tmp_path: Path, damage: str, caplog
) -> None:
    common = ["training.max_train_steps=6", "experiment.keep_last=5"]
    straight = train(make_task(_recipe(pictures, *common)), output_dir=tmp_path / "straight")
    train(make_task(_recipe(pictures, *common, "training.stop_at_step=4")), output_dir=tmp_path / "split")
    target = tmp_path / "split" / "checkpoint-00000004" / damage
    data = target.read_bytes()
    target.write_bytes(b"{ not json" if damage == "meta.json" else data[: len(data) // 2])
    with caplog.at_level("WARNING", logger="titok"):
        second = train(make_task(_recipe(pictures, *common)), resume=True, output_dir=tmp_path / "split")
    assert second.start_step == 2 and second.step == 6
    assert "checkpoint-00000004 is damaged" in caplog.text
    a = ckpt.load_tensors(straight.checkpoint / "model.safetensors")
    b = ckpt.load_tensors(second.checkpoint / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_with_every_checkpoint_damaged_is_one_error(pictures: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(
        make_task(_recipe(pictures, "training.max_train_steps=4", "training.stop_at_step=2")), output_dir=run
    )
    (run / "checkpoint-00000002" / "model.safetensors").write_bytes(b"cut")
    with pytest.raises(CheckpointError, match="every checkpoint is damaged"):
        train(make_task(_recipe(pictures, "training.max_train_steps=4")), resume=True, output_dir=run)


def test_a_resumed_run_logs_each_step_once_and_no_bar_in_a_log_file(pictures: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["training.max_train_steps=6", "experiment.save_every=3", "experiment.progress_bar=true"]
    train(make_task(_recipe(pictures, *common, "training.stop_at_step=5")), output_dir=run)
    # Stopped at 5, last checkpoint at 3 (and 5); drop 5 as a crash would have.
    import shutil

    shutil.rmtree(run / "checkpoint-00000005")
    train(make_task(_recipe(pictures, *common)), resume=True, output_dir=run)
    steps = [
        __import__("json").loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_training_progress_bar_stays_off_when_stderr_is_not_a_terminal(
    pictures: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    log = tmp_path / "log.txt"
    with open(log, "w") as handle:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "titok.cli.app",
                "train",
                "single-stage",
                "-c",
                "tiny_single_stage",
                *[q for q in QUIET if "progress_bar" not in q],
                "experiment.progress_bar=true",
                f"data.train={pictures}",
                "training.max_train_steps=3",
                "-o",
                str(tmp_path / "run"),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=300,
        )
    text = log.read_text()
    assert "\r" not in text and "step/s" not in text and "it/s" not in text, text[-500:]


def test_a_full_disk_during_a_save_says_so_and_keeps_the_old_file(tmp_path: Path) -> None:
    import errno

    target = tmp_path / "model.safetensors"
    ckpt.save_tensors({"w": torch.ones(2)}, target)

    def full(_tmp: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointError, match="the disk is full.*previous checkpoint is intact"):
        ckpt.atomic_write(target, full)
    assert torch.equal(ckpt.load_tensors(target)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left


def test_missing_training_data_suggests_data_train(capsys, tmp_path: Path) -> None:
    code = main(["train", "single-stage", "-c", "tiny_single_stage", f"data.train={tmp_path / 'none'}"])
    err = capsys.readouterr().err
    assert code == 2 and "data.train=PATH" in err and "TITOK_DATA" in err


def test_an_unreachable_hub_fails_fast(monkeypatch, tmp_path: Path) -> None:
    import time

    import huggingface_hub
    from huggingface_hub import constants

    from titok.loading import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def no_download(**_kw: object) -> None:
        raise AssertionError("hf_hub_download must not be tried when the hub cannot be reached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="the hub cannot be reached"):
        hub.download("owner/repo", "config.json")
    assert time.perf_counter() - start < 5
