"""``titok generate`` end to end on the CPU with local folders, its input errors, the model's own
class names, and the guidance semantics (labels=None: unconditional; guidance 0: conditional)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from titok import Generator, GeneratorConfig, TiTok
from titok.class_names import IMAGENETTE_CLASSES
from titok.cli import main
from titok.errors import ConfigError, TitokError
from titok.sampling import confidence_decode

IMAGENETTE = list(IMAGENETTE_CLASSES)


def tiny_generator(**kw) -> Generator:
    torch.manual_seed(0)
    return Generator.from_preset(
        "tiny", codebook_size=1024, seq_len=16, num_classes=10, dropout=0.0, attn_dropout=0.0, **kw
    ).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A fresh 32 px tokenizer, a generator naming it (absolute path) and one without a tokenizer."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    TiTok.from_preset("titok-tiny-32").eval().save_pretrained(root / "tok")
    tiny_generator(class_names=IMAGENETTE, tokenizer=str(root / "tok"), num_steps=4).save_pretrained(
        root / "gen"
    )
    tiny_generator().save_pretrained(root / "bare")
    return {"root": root, "tok": root / "tok", "gen": root / "gen", "bare": root / "bare"}


def run(args: list[str], capsys) -> tuple[int, str]:
    code = main(["generate", *args])
    return code, capsys.readouterr().err


def test_generate_writes_pngs_and_grid(models, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(["-g", str(models["gen"]), "-c", "tench", "-c", "3", "-n", "2", "-o", str(out)], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [
        "0000_tench_000.png",
        "0000_tench_001.png",
        "0003_chain-saw_000.png",
        "0003_chain-saw_001.png",
        "grid.png",
    ]
    assert Image.open(out / "0000_tench_000.png").size == (32, 32)
    grid = np.asarray(Image.open(out / "grid.png").convert("L"))
    margin = grid.shape[1] - 64
    assert grid.shape[0] == 64 and margin > 20  # 2 classes (rows) x 2 images, labels on the left
    for row in range(2):  # each row's label is written in its own band of the margin
        band = grid[row * 32 : (row + 1) * 32, :margin]
        assert (band < 128).any(), f"row {row} has no label"
    assert (grid[:, :margin] > 128).mean() > 0.7  # the margin is white around the text
    # Same seed, same images; a different seed gives different ones.
    again, other = tmp_path / "again", tmp_path / "other"
    assert (
        run(["-g", str(models["gen"]), "-c", "tench", "-c", "3", "-n", "2", "-o", str(again)], capsys)[0] == 0
    )
    assert (out / "grid.png").read_bytes() == (again / "grid.png").read_bytes()
    code, _ = run(
        ["-g", str(models["gen"]), "-c", "0", "-c", "3", "-n", "2", "-o", str(other), "--seed", "5"], capsys
    )
    assert code == 0 and (out / "grid.png").read_bytes() != (other / "grid.png").read_bytes()


def test_every_class_of_the_models_own_list_and_bf16(models, tmp_path, capsys):
    out = tmp_path / "all"
    code, err = run(
        ["-g", str(models["gen"]), "-n", "1", "-o", str(out), "--dtype", "bfloat16", "-b", "4"], capsys
    )
    assert code == 0, err
    names = sorted(p.name for p in out.glob("0*.png"))
    assert (
        len(names) == 10
        and names[9] == "0009_parachute_000.png"
        and names[1] == "0001_english-springer_000.png"
    )
    width, height = Image.open(out / "grid.png").size
    assert height == 320 and width > 32


@pytest.mark.parametrize(
    ("option", "dtype"), [([], torch.float32), (["--dtype", "bfloat16"], torch.bfloat16)]
)
def test_dtype_reaches_generate(models, tmp_path, capsys, monkeypatch, option, dtype):
    seen = []
    original = Generator.generate

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("dtype"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Generator, "generate", spy)
    code, err = run(
        ["-g", str(models["gen"]), "-c", "0", "-n", "1", "-o", str(tmp_path / "o"), *option], capsys
    )
    assert code == 0, err
    assert seen == [dtype]


def test_explicit_tokenizer_and_relative_tokenizer_beside_the_generator(models, tmp_path, capsys):
    code, err = run(["-g", str(models["bare"]), "-c", "7", "-n", "1", "-o", str(tmp_path / "a")], capsys)
    assert code == 2 and "does not name its tokenizer; pass --model (the tokenizer)" in err
    code, err = run(
        [
            "-g",
            str(models["bare"]),
            "-m",
            str(models["tok"]),
            "-c",
            "7",
            "-n",
            "1",
            "-o",
            str(tmp_path / "a"),
        ],
        capsys,
    )
    assert code == 0, err
    assert (tmp_path / "a" / "0007_7_000.png").is_file()
    folder = tmp_path / "gen-with-tok"
    tiny_generator(tokenizer="tok").save_pretrained(folder)
    TiTok.from_pretrained(models["tok"]).save_pretrained(folder / "tok")
    code, err = run(["-g", str(folder), "-c", "1", "-n", "1", "-o", str(tmp_path / "b")], capsys)
    assert code == 0, err


def test_old_spellings_still_work_with_a_warning(models, tmp_path, capsys):
    """``-m GENERATOR`` and ``--tokenizer`` (the old spellings) give the images of ``-g``/``-m``."""
    new = ["-g", str(models["bare"]), "-m", str(models["tok"])]
    old = ["-m", str(models["bare"]), "--tokenizer", str(models["tok"])]
    for name, spelling in (("new", new), ("old", old)):
        code, err = run([*spelling, "-c", "7", "-n", "1", "-o", str(tmp_path / name)], capsys)
        assert code == 0, err
        assert ("old spelling" in err) == (name == "old")
    assert (tmp_path / "new" / "0007_7_000.png").read_bytes() == (
        tmp_path / "old" / "0007_7_000.png"
    ).read_bytes()
    code, err = run(["-m", str(models["gen"]), "-c", "1", "-n", "1", "-o", str(tmp_path / "m")], capsys)
    assert code == 0 and f"--model {models['gen']} names a generator" in err
    code, err = run(
        ["-g", str(models["gen"]), "-m", str(models["tok"]), "--tokenizer", "x", "-o", str(tmp_path / "z")],
        capsys,
    )
    assert code == 2 and "--tokenizer is the old spelling of --model: pass one of them" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "tench fish"], "unknown class name 'tench fish'; close matches: 'tench' (0)"),
        (["-c", "parashute"], "close matches: 'parachute' (9)"),
        (["-c", "10"], r"class id 10 out of range: there are 10 classes (0..9)"),
        (["-c", "golden retriever"], "unknown class name 'golden retriever'"),  # not in this model's list
        (["--guidance", "-1"], "--guidance-scale must be >= 0"),
        (["--guidance-scale", "-1"], "--guidance-scale must be >= 0"),
        (["--steps", "0"], "--num-steps must be >= 1, got 0"),
        (["--num-steps", "0"], "--num-steps must be >= 1, got 0"),
        (["--temperature", "-0.5"], "--temperature must be >= 0"),
        (
            ["--guidance-schedule", "cosine"],
            "guidance_schedule must be one of constant, linear, power-cosine",
        ),
        (["--dtype", "float16"], "--dtype: expected float32 or bfloat16"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(models, tmp_path, capsys, args, message):
    code, err = run(["-g", str(models["gen"]), "-o", str(tmp_path / "x"), "-n", "1", *args], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "x").exists()


def test_tokenizer_that_does_not_fit(models, tmp_path, capsys):
    other = tmp_path / "tok64"
    TiTok.from_preset("titok-tiny-64").save_pretrained(other)
    code, err = run(
        ["-g", str(models["gen"]), "-m", str(other), "-c", "1", "-o", str(tmp_path / "y")], capsys
    )
    assert code == 2 and "does not fit generator" in err


def test_class_names_and_tokenizer_are_saved_and_checked(models, tmp_path):
    loaded = Generator.from_pretrained(models["gen"])
    assert loaded.config.class_names == IMAGENETTE and loaded.config.tokenizer == str(models["tok"])
    saved = json.loads((models["gen"] / "config.json").read_text())["config"]
    assert saved["class_names"][9] == "parachute"
    # Configs written before these fields existed still load (they default to None).
    legacy = tmp_path / "legacy"
    tiny_generator().save_pretrained(legacy)
    meta = json.loads((legacy / "config.json").read_text())
    del meta["config"]["class_names"], meta["config"]["tokenizer"]
    (legacy / "config.json").write_text(json.dumps(meta))
    assert Generator.from_pretrained(legacy).config.class_names is None
    with pytest.raises(ConfigError, match="class_names has 2 names but num_classes is 10"):
        tiny_generator(class_names=["a", "b"])
    with pytest.raises(ConfigError, match="tokenizer must be a non-empty string"):
        tiny_generator(tokenizer="")
    assert GeneratorConfig().class_names is None and GeneratorConfig().tokenizer is None


# -- guidance semantics --------------------------------------------------------------------------------


class Spy:
    """Wraps ``masked_logits`` and records the condition tokens of every pass."""

    def __init__(self, model: Generator) -> None:
        self.model = model
        self.seen: list[torch.Tensor] = []

    def __call__(self, ids: torch.Tensor, class_tokens: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        self.seen.append(class_tokens.clone())
        return self.model.masked_logits(ids, class_tokens, where)


def decode_with(
    model: Generator, class_tokens: torch.Tensor, seed: int, **settings
) -> tuple[torch.Tensor, Spy]:
    spy = Spy(model)
    rng = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        tokens = confidence_decode(
            spy,
            class_tokens,
            model.no_class_token_id,
            model.config.seq_len,
            model.mask_token_id,
            model.config.sampling_settings(**settings),
            generator=rng,
        )
    return tokens, spy


def test_labels_none_is_the_pure_unconditional_model():
    model = tiny_generator()
    got = model.generate(None, num_samples=3, seed=7, guidance_scale=4.0)  # guidance is moot without labels
    uncond = torch.full((3,), model.no_class_token_id)
    want, spy = decode_with(model, uncond, 7, guidance_scale=0.0, guidance_schedule="constant")
    assert torch.equal(got, want)
    assert all(bool((seen == model.no_class_token_id).all()) for seen in spy.seen)
    assert not torch.equal(got, model.generate([0, 1, 2], seed=7, guidance_scale=0.0))
    with pytest.raises(TitokError, match="needs num_samples >= 1"):
        model.generate(None)
    with pytest.raises(TitokError, match="only for unconditional"):
        model.generate([1], num_samples=2)


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_guidance_zero_is_the_pure_conditional_model(schedule):
    model = tiny_generator()
    labels = [3, 4, 5]
    got = model.generate(labels, seed=11, guidance_scale=0.0, guidance_schedule=schedule)
    cond = torch.tensor(labels) + model.config.codebook_size + 1
    want, spy = decode_with(model, cond, 11, guidance_scale=0.0, guidance_schedule=schedule)
    assert torch.equal(got, want)
    assert all(not bool((seen == model.no_class_token_id).any()) for seen in spy.seen)  # never unconditional
    with torch.no_grad():  # make the class tokens matter, so that guidance changes the argmax
        model.model.embeddings.word_embeddings.weight[model.config.codebook_size + 1 :] *= 20
    plain = model.generate(labels, seed=11, guidance_scale=0.0, randomize_temperature=0.0)
    guided = model.generate(
        labels, seed=11, guidance_scale=5.0, guidance_schedule="constant", randomize_temperature=0.0
    )
    assert not torch.equal(plain, guided)


def test_unconditional_flag_samples_the_no_class_model(models, tmp_path, capsys):
    out = tmp_path / "uncond"
    code, err = run(
        ["-g", str(models["gen"]), "--unconditional", "-n", "3", "-b", "2", "-o", str(out)], capsys
    )
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.png")) == [
        "grid.png",
        "unconditional_000.png",
        "unconditional_001.png",
        "unconditional_002.png",
    ]
    gen = Generator.from_pretrained(models["gen"])
    tokens = gen.generate(None, num_samples=2, generator=torch.Generator().manual_seed(0))
    image = TiTok.from_pretrained(models["tok"]).decode(tokens)[0]
    saved = torch.from_numpy(np.array(Image.open(out / "unconditional_000.png"))).float()
    assert torch.allclose(saved.permute(2, 0, 1) / 255, image, atol=1 / 255 + 1e-6)
    code, err = run(["-g", str(models["gen"]), "--unconditional", "-c", "0", "-o", str(out)], capsys)
    assert code == 2 and "drop --class" in err


def test_labelled_grid_keeps_the_images_and_names_the_rows() -> None:
    from titok.cli.generate import labelled_grid, make_grid

    images = torch.rand(4, 3, 16, 16)
    grid = np.asarray(labelled_grid(images, ["golf ball", "tench"]))
    plain = np.asarray(
        Image.fromarray((make_grid(images, 2).permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
    )
    assert grid.shape[0] == 32 and np.abs(grid[:, -32:].astype(int) - plain.astype(int)).max() <= 1
    short = np.asarray(labelled_grid(images, ["a", "b"]))
    assert short.shape[1] < grid.shape[1], "the margin follows the longest label"


def test_a_failed_generate_leaves_no_output_folder(models, tmp_path, capsys, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(TiTok, "decode", broken)
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError, match="out of memory"):
        main(["generate", "-g", str(models["gen"]), "-c", "0", "-n", "1", "-o", str(out)])
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("x")
    with pytest.raises(RuntimeError):
        main(["generate", "-g", str(models["gen"]), "-c", "0", "-n", "1", "-o", str(kept)])
    assert (kept / "mine.txt").is_file(), "a folder that existed before is left alone"
