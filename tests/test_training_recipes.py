"""Tokenizer training end to end on tiny 32 px models: recipe errors, damaged data, the ``titok
train`` command, prefixes in every mode and the one engine (the runs and helpers:
tests/training_runs.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from tests.synthetic_data import write_tar
from tests.training_runs import (
    FAST,
    RECIPES,
    copy_samples,
    train_recipe,
)
from titok.errors import ConfigError
from titok.models.titok import TiTok
from titok.training import TrainResult, load_recipe, make_task, train

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


def test_yaml_1_1_booleans_stay_words(tmp_path: Path) -> None:
    """`no`, `off`, `yes` are strings (YAML 1.2): `mixed_precision=no` is the documented value, and a
    bool field given one names the field instead of silently flipping it."""
    good = RECIPES / "tiny_vqgan.yaml"
    assert load_recipe(good, ["training.mixed_precision=no"]).training.mixed_precision == "no"
    assert load_recipe(good, ["training.use_ema=false"]).training.use_ema is False
    assert load_recipe(good, ["training.use_ema=True"]).training.use_ema is True
    with pytest.raises(ConfigError, match=r"'training\.use_ema' expects bool, got 'off'"):
        load_recipe(good, ["training.use_ema=off"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(good.read_text().replace('mixed_precision: "no"', "mixed_precision: no"))
    assert load_recipe(recipe).training.mixed_precision == "no"


def test_model_fields_of_the_wrong_type_name_the_key() -> None:
    """`model` keys are checked against the model config's field types when the recipe loads, so a
    typo names the key instead of failing inside a layer (or, for an unused field, training)."""
    titok_recipe = RECIPES / "imagenette64_titok.yaml"
    with pytest.raises(ConfigError, match=r"'model\.encoder_width' expects int, got 'abc'"):
        load_recipe(titok_recipe, ["model.encoder_width=abc"])
    with pytest.raises(ConfigError, match=r"'model\.conv_channels' expects list of int, got \[64, 'x'\]"):
        load_recipe(titok_recipe, ["model.conv_channels=[64,x]"])
    with pytest.raises(ConfigError, match=r"'model\.pixel_decoder\.z_channels' expects int"):
        load_recipe(titok_recipe, ["model.pixel_decoder={z_channels: wide}"])
    vqgan_recipe = RECIPES / "tiny_vqgan.yaml"
    with pytest.raises(ConfigError, match=r"'model\.channel_mult' expects list of int, got '\[1,2'"):
        load_recipe(vqgan_recipe, ["model.channel_mult=[1,2"])
    assert load_recipe(vqgan_recipe, ["model.channel_mult=[1,2,2,4]"]).vqgan_config().channel_mult == (
        1,
        2,
        2,
        4,
    )
    with pytest.raises(ConfigError, match=r"'model\.depth' expects int, got 'deep'"):
        load_recipe(RECIPES / "tiny_generator.yaml", ["model.depth=deep"])
    assert load_recipe(titok_recipe, ["model.token_size=16"]).titok_config().token_size == 16


def test_missing_teacher_and_cache_with_augmentation_are_config_errors(
    vqgan_run: TrainResult, shard: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="teacher_codes: cache needs data.augment: false"):
        train_recipe(
            "tiny_stage1",
            "stage1",
            tmp_path / "a",
            f"data.train={shard}",
            f"teacher={vqgan_run.export_dir}",
            "teacher_codes=cache",
            "data.augment=true",
        )
    with pytest.raises(ConfigError, match="init_from"):
        train_recipe("tiny_stage2", "stage2", tmp_path / "b", f"data.train={shard}", "init_from=")


# ---------------------------------------------------------------------------- damaged data


def test_corrupt_sample_is_skipped_and_counted(imagenette: Path, tmp_path: Path, caplog) -> None:
    good = copy_samples(imagenette / "train-0000.tar", 3)
    bad = [("broken_0001.cls", b"0"), ("broken_0001.jpg", b"\xff\xd8\xff not really a jpeg")]
    data = write_tar(tmp_path / "damaged.tar", good[:2] + bad + good[2:])
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
    """Stage 1 on prefixes (each image decoded from a prefix and in full) exports a
    variable-length proxy model; stage 2 on prefixes from the fixed-length stage-1 export adds a
    fresh tail token and keeps the frozen encoder."""
    s1 = train_recipe(
        "tiny_stage1",
        "stage1",
        tmp_path / "s1",
        f"data.train={shard}",
        f"teacher={vqgan_run.export_dir}",
        "training.max_train_steps=4",
        "prefix.enabled=true",
        "prefix.with_full=true",
    )
    proxy = TiTok.from_pretrained(s1.export_dir)
    assert proxy.config.variable_length
    assert proxy.decode_proxy_codes(proxy.encode(torch.rand(2, 3, 32, 32), num_tokens=3)).shape == (2, 8, 8)
    s2 = train_recipe(
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
    result = train_recipe(
        "tiny_single_stage_vae",
        "single_stage",
        tmp_path,
        f"data.train={shard}",
        "training.max_train_steps=3",
        "prefix.enabled=true",
        "prefix.with_full=true",
        "losses.discriminator_start=1",  # the GAN terms see both copies of every image
    )
    assert [("discriminator/discriminator" in logs) for logs in result.history] == [False, True, True]
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
