"""The packaged training recipes: each loads and builds its task, and the published TiTok recipes
carry the authors' hyper-parameters (bytedance/1d-tokenizer, configs/training/TiTok/stage{1,2}/ and
configs/training/stage{1,2}/ for S-128).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from titok.cli.recipes import recipes_dir, resolve_recipe
from titok.errors import ConfigError
from titok.training import load_recipe, make_task
from titok.training.config import MODES

RECIPES = sorted(recipes_dir().glob("*.yaml"))
TOKENIZER_MODES = ("vqgan", "stage1", "stage2", "single_stage")
# Published sizes: (preset, tokens, encoder/decoder width, depth).
PUBLISHED = {
    "l32": ("titok-l32-stage1", 32, 1024, 24),
    "b64": ("titok-b64-stage1", 64, 768, 12),
    "s128": ("titok-s128-stage1", 128, 512, 8),
}


def test_recipes_are_packaged() -> None:
    names = {p.stem for p in RECIPES}
    for size in PUBLISHED:
        assert {f"titok_{size}_stage1", f"titok_{size}_stage2"} <= names
    assert {"tiny_vqgan", "tiny_stage1", "tiny_stage2", "tiny_single_stage", "tiny_single_stage_vae"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_with_path_overrides(path: Path, tmp_path: Path) -> None:
    recipe = load_recipe(path, [f"data.train={tmp_path}/shard-{{0000..0003}}.tar"])
    assert recipe.mode in MODES
    assert recipe.data.train == f"{tmp_path}/shard-{{0000..0003}}.tar"
    assert make_task(recipe).mode == recipe.mode
    assert resolve_recipe(path.stem) == path
    if recipe.mode == "vqgan":
        assert recipe.vqgan_config().codebook_size > 0
    elif recipe.mode in ("stage1", "single_stage"):
        head = "proxy" if recipe.mode == "stage1" else "pixels"
        assert recipe.titok_config(decoder_head=head).num_latent_tokens > 0


def test_tiny_recipes_read_the_data_path_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TITOK_DATA", str(tmp_path))
    monkeypatch.setenv("TITOK_TEACHER", str(tmp_path / "teacher"))
    recipe = load_recipe(resolve_recipe("tiny_stage1"))
    assert recipe.data.train == str(tmp_path) and recipe.teacher == str(tmp_path / "teacher")
    monkeypatch.delenv("TITOK_DATA")
    assert load_recipe(resolve_recipe("tiny_stage1")).data.train == "../shared/data/imagenette"


@pytest.mark.parametrize("size", sorted(PUBLISHED))
def test_published_stage1_recipe_has_the_authors_settings(size: str) -> None:
    preset, tokens, width, depth = PUBLISHED[size]
    r = load_recipe(resolve_recipe(f"titok_{size}_stage1"), mode="stage1")
    assert r.model["preset"] == preset and r.teacher == "maskgit-vqgan" and r.teacher_codes == "online"
    cfg = r.titok_config(decoder_head="proxy")
    assert (cfg.num_latent_tokens, cfg.encoder_width, cfg.encoder_depth, cfg.decoder_width) == (
        tokens,
        width,
        depth,
        width,
    )
    assert (cfg.codebook_size, cfg.token_size, cfg.use_l2_norm, cfg.commitment_cost) == (4096, 12, True, 0.25)
    assert (cfg.patch_size, cfg.image_size, cfg.num_proxy_codes) == (16, 256, 1024)
    assert r.loss_config().quantizer_weight == 1.0
    o, s, t = r.optimizer, r.lr_scheduler, r.training
    assert (o.learning_rate, o.beta1, o.beta2, o.weight_decay, o.epsilon) == (1e-4, 0.9, 0.99, 1e-4, 1e-8)
    assert (s.name, s.warmup_steps, s.end_lr) == ("cosine", 10_000, 1e-5)
    assert (t.batch_size, t.gradient_accumulation_steps, t.max_train_steps) == (32, 1, 1_000_000)
    assert (t.mixed_precision, t.use_ema, t.ema_decay, t.max_grad_norm, t.seed) == (
        "fp16",
        True,
        0.999,
        1.0,
        42,
    )
    assert r.data.augment and r.data.num_workers == 12
    assert (r.experiment.save_every, r.experiment.log_every, r.experiment.image_every) == (50_000, 50, 5_000)


@pytest.mark.parametrize("size", sorted(PUBLISHED))
def test_published_stage2_recipe_has_the_authors_settings(size: str) -> None:
    r = load_recipe(resolve_recipe(f"titok_{size}_stage2"), mode="stage2")
    assert r.init_from == f"runs/titok_{size}_stage1/export" and r.teacher == "maskgit-vqgan"
    assert r.model == {"commitment_cost": 0.0}
    loss = r.loss_config()
    assert (loss.discriminator_start, loss.discriminator_factor, loss.discriminator_weight) == (
        20_000,
        1.0,
        0.01,
    )
    assert (loss.quantizer_weight, loss.lecam_regularization_weight) == (0.0, 0.001)
    assert (loss.perceptual_loss, loss.perceptual_weight) == ("convnext_s", 0.1)
    assert (loss.reconstruction_loss, loss.reconstruction_weight) == ("l2", 1.0)
    assert not loss.allow_missing, "the published recipe needs its perceptual weights"
    o, s, t = r.optimizer, r.lr_scheduler, r.training
    assert (o.learning_rate, o.discriminator_learning_rate, o.beta1, o.beta2, o.weight_decay) == (
        1e-4,
        1e-4,
        0.9,
        0.999,
        1e-4,
    )
    assert (s.name, s.warmup_steps, s.end_lr) == ("cosine", 5_000, 1e-5)
    assert (t.batch_size, t.max_train_steps, t.mixed_precision, t.use_ema, t.ema_decay) == (
        32,
        500_000,
        "fp16",
        True,
        0.999,
    )
    assert (t.max_grad_norm, t.seed) == (1.0, 42)


def test_overrides_change_a_published_recipe() -> None:
    r = load_recipe(
        resolve_recipe("titok_l32_stage1"),
        ["training.batch_size=64", "model.num_latent_tokens=64", "optimizer.learning_rate=2e-4"],
    )
    assert r.training.batch_size == 64 and r.optimizer.learning_rate == 2e-4
    assert r.titok_config(decoder_head="proxy").num_latent_tokens == 64


def test_unknown_recipe_name_lists_the_packaged_ones() -> None:
    with pytest.raises(ConfigError, match="tiny_vqgan"):
        resolve_recipe("no_such_recipe")


def test_tokenizer_modes_are_registered() -> None:
    assert set(TOKENIZER_MODES) <= set(MODES)
