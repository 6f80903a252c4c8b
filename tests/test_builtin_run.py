"""The run that makes the built-in models (``python -m titok.reproduce.builtin``), in miniature."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from titok.errors import ConfigError
from titok.models.generator import Generator
from titok.models.titok import TiTok
from titok.reproduce import get_budget
from titok.reproduce.builtin import (
    BUILTIN,
    CONTROL,
    FINETUNED,
    GENERATION_FINETUNED,
    STAGES,
    TOKENIZER,
    finetune_recipe,
    main,
    run_builtin,
    tokenizer_recipe,
    write_report,
)
from titok.reproduce.ship import NAME, ship_models

#: The built-in run's stages on the reproduction's tiny budget (a few dozen images, a handful of steps).
TINY = dataclasses.replace(
    get_budget("tiny"), name="builtin-tiny", token_counts=(32,), two_stage_token_counts=()
)


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory, imagenette) -> Path:
    out = tmp_path_factory.mktemp("builtin") / "run"
    run_builtin(out, str(imagenette), control_steps=4, budget=TINY)
    return out


def test_every_stage_runs_and_the_report_names_both_tokenizers(builtin_run: Path, imagenette) -> None:
    state = json.loads((builtin_run / "state.json").read_text())
    assert list(state["stages"]) == list(STAGES)
    assert all(s["done"] and s["seconds"] > 0 for s in state["stages"].values())
    # the tokenizer trained the budget's steps on its images, with the shipped recipe's options
    last = json.loads((builtin_run / TOKENIZER.folder / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == TINY.tokenizer_steps
    config = json.loads((TOKENIZER.export_dir(builtin_run) / "config.json").read_text())["config"]
    assert (
        config["num_latent_tokens"] == 32 and config["latent_centering"] and config["dead_code_threshold"] > 0
    )
    report = (write_report(run_builtin(builtin_run, str(imagenette), budget=TINY))).read_text()
    for tokenizer in (TOKENIZER, FINETUNED, CONTROL):
        assert f"| {tokenizer.name} | " in report
        assert f"| {tokenizer.name} ({tokenizer.label}) | " in report  # the fine-tuning table
    images = TINY.tokenizer_steps * TINY.batch_size
    assert f"| {TOKENIZER.name} | 32 | {images} |" in report
    assert f"| {FINETUNED.name} | 32 | {images} + {TINY.finetune_steps * TINY.batch_size} |" in report
    assert "## Decoder fine-tuning (the paper's Table 3a in miniature)" in report
    assert f"results/samples-{GENERATION_FINETUNED}.png" in report
    assert (builtin_run / "results" / f"samples-{GENERATION_FINETUNED}.png").is_file()
    assert f"({TINY.eval_images} held-out images)" in report
    assert "requested class" in report


def test_a_finished_run_resumes_without_training_again(builtin_run: Path, imagenette) -> None:
    before = json.loads((builtin_run / "state.json").read_text())["stages"]
    mtime = (TOKENIZER.export_dir(builtin_run) / "model.safetensors").stat().st_mtime_ns
    run_builtin(builtin_run, str(imagenette), control_steps=4, budget=TINY)
    after = json.loads((builtin_run / "state.json").read_text())["stages"]
    assert {k: v["seconds"] for k, v in after.items()} == {k: v["seconds"] for k, v in before.items()}
    assert (TOKENIZER.export_dir(builtin_run) / "model.safetensors").stat().st_mtime_ns == mtime


def test_shipped_models_load_and_are_stored_in_float16(builtin_run: Path, tmp_path: Path) -> None:
    tok_dir, gen_dir = ship_models(builtin_run, tmp_path / "assets")
    assert tok_dir == tmp_path / "assets" / "models" / NAME
    for folder in (tok_dir, gen_dir):
        weights = load_file(next(folder.glob("*.safetensors")))
        assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
        source = json.loads((folder / "source.json").read_text())
        assert source["tokenizer"] == TOKENIZER.name and source["budget"] == TINY.name
    tokenizer = TiTok.from_pretrained(tok_dir).eval()
    trained = TiTok.from_pretrained(TOKENIZER.export_dir(builtin_run)).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        tokens = tokenizer.encode(images)
        assert tokens.shape == (2, 32)
        # float16 storage changes the weights by at most their rounding
        assert torch.allclose(tokenizer.decode(tokens), trained.decode(tokens), atol=2e-2)
    generator = Generator.from_pretrained(gen_dir)
    assert generator.config.tokenizer == NAME


def test_the_builtin_budget_keeps_the_recipe_steps(tmp_path: Path, imagenette) -> None:
    from titok.reproduce.run_folder import Run

    recipe = tokenizer_recipe(Run(tmp_path / "run", BUILTIN, str(imagenette)))
    assert recipe.training.max_train_steps == BUILTIN.tokenizer_steps == 6000
    assert recipe.training.batch_size == 32 and recipe.data.max_samples is None
    assert recipe.data.holdout == 500


def test_the_builtin_run_is_a_single_stage_titok_and_the_f8_vqgan() -> None:
    assert (TOKENIZER.name, TOKENIZER.num_tokens, TOKENIZER.is_2d) == ("titok-k32-single", 32, False)
    assert (CONTROL.name, CONTROL.num_tokens, CONTROL.is_2d) == ("vqgan-f8", 64, True)
    assert STAGES[2:5] == (TOKENIZER.name, CONTROL.name, FINETUNED.name)
    assert (FINETUNED.name, FINETUNED.base, FINETUNED.num_tokens) == ("titok-k32-finetune", TOKENIZER, 32)


def test_unknown_stages_are_a_config_error_and_a_one_line_exit_2(tmp_path: Path, capsys) -> None:
    message = "unknown stage(s) nonsense; known: classifier, perceptual-net, titok-k32-single"
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_builtin(tmp_path / "run", "data", stages=["classifier", "nonsense"])
    assert main(["-o", str(tmp_path / "run"), "--stages", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_the_decoder_fine_tuning_keeps_the_tokens_and_changes_the_decoder(builtin_run: Path) -> None:
    stage = json.loads((builtin_run / "state.json").read_text())["stages"][FINETUNED.name]
    assert stage["export_step"] == stage["steps"] == TINY.finetune_steps
    before = TiTok.from_pretrained(TOKENIZER.export_dir(builtin_run)).eval()
    after = TiTok.from_pretrained(FINETUNED.export_dir(builtin_run)).eval()
    images = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        tokens = before.encode(images)
        assert torch.equal(after.encode(images), tokens)
        assert not torch.allclose(after.decode(tokens), before.decode(tokens), atol=1e-4)
    recon = json.loads((builtin_run / "results" / "reconstruction.json").read_text())
    assert {"seam_score", "seam_score_originals", "pattern_score"} <= set(recon[FINETUNED.name])
    generation = json.loads((builtin_run / "results" / "generation.json").read_text())
    assert generation[GENERATION_FINETUNED]["tokenizer"] == FINETUNED.name
    assert generation["1d"]["tokenizer"] == TOKENIZER.name


def test_the_fine_tuned_tokenizer_ships_with_the_generator(builtin_run: Path, tmp_path: Path) -> None:
    tok_dir, _ = ship_models(builtin_run, tmp_path / "assets", tokenizer=FINETUNED)
    assert json.loads((tok_dir / "source.json").read_text())["tokenizer"] == FINETUNED.name
    shipped = TiTok.from_pretrained(tok_dir).eval()
    trained = TiTok.from_pretrained(FINETUNED.export_dir(builtin_run)).eval()
    tokens = torch.randint(0, shipped.codebook_size, (2, 32))
    with torch.no_grad():
        assert torch.allclose(shipped.decode(tokens), trained.decode(tokens), atol=2e-2)
    with pytest.raises(ConfigError, match="makes other tokens"):
        ship_models(builtin_run, tmp_path / "other", tokenizer=CONTROL)


def test_the_builtin_budget_keeps_the_fine_tuning_recipe_steps(tmp_path: Path, imagenette) -> None:
    from titok.reproduce.run_folder import Run

    recipe = finetune_recipe(Run(tmp_path / "run", BUILTIN, str(imagenette)))
    t = recipe.training
    assert (
        (t.max_train_steps, t.stop_at_step, t.batch_size)
        == (2000, BUILTIN.finetune_steps, 32)
        == (2000, 1000, 32)
    )
    assert (recipe.lr_scheduler.warmup_steps, recipe.losses["discriminator_start"]) == (100, 200)
    assert recipe.experiment.save_every == 250 and recipe.data.holdout == 500
    assert recipe.init_from == str(TOKENIZER.export_dir(tmp_path / "run"))
    assert recipe.losses["perceptual_network"] == str(tmp_path / "run" / "perceptual-net")
