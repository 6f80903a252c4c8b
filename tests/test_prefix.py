"""Training on token prefixes and decoding any prefix: how k is drawn, which positions the decoder
sees, the prefix API and its refusal for fixed-length models, exact resume, and a tiny run whose
reconstructions improve with k.

The training runs use images the test makes (an ImageFolder of smooth random pictures), so they
need no shared data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image

from titok.data.loader import DataConfig
from titok.errors import ConfigError, TitokError
from titok.evaluation.prefix import position_sensitivity, prefix_curve
from titok.images import to_batch
from titok.models.config import TiTokConfig
from titok.models.generator import Generator, GeneratorConfig
from titok.models.prefixes import powers_of_two
from titok.models.titok import TiTok
from titok.pretokenize import pretokenize
from titok.training import checkpointing as ckpt
from titok.training import load_recipe, make_task, train
from titok.training.prefix import PrefixSection, draw_lengths
from titok.training.tasks.generator import GeneratorTask

RECIPES = Path(__file__).resolve().parents[1] / "src" / "titok" / "recipes"


def _tiny(variable_length: bool = True, hidden_tail: str = "remove", **kw: object) -> TiTok:
    cfg = TiTokConfig(
        image_size=16,
        patch_size=4,
        encoder_width=32,
        decoder_width=32,
        encoder_depth=1,
        decoder_depth=1,
        encoder_heads=2,
        decoder_heads=2,
        num_latent_tokens=8,
        token_size=4,
        codebook_size=32,
        decoder_head="pixels",
        variable_length=variable_length,
        hidden_tail=hidden_tail if variable_length else "remove",
        **kw,  # type: ignore[arg-type]
    )
    return TiTok(cfg).eval()


# ---------------------------------------------------------------------------- drawing k


def test_powers_of_two_end_at_k() -> None:
    assert powers_of_two(32) == [1, 2, 4, 8, 16, 32]
    assert powers_of_two(12) == [1, 2, 4, 8, 12]
    assert powers_of_two(1) == [1]


def test_lengths_are_none_when_off_and_during_warmup() -> None:
    assert draw_lengths(PrefixSection(), 32, 4, step=10, seed=0) is None
    on = PrefixSection(enabled=True, warmup_steps=5)
    assert draw_lengths(on, 32, 4, step=4, seed=0) is None
    assert draw_lengths(on, 32, 4, step=5, seed=0) is not None


def _many(section: PrefixSection, k: int = 32, steps: int = 400, batch: int = 16) -> torch.Tensor:
    return torch.cat([draw_lengths(section, k, batch, step=s, seed=0) for s in range(steps)])  # type: ignore[misc]


def test_uniform_per_sample_covers_1_to_k_evenly() -> None:
    draws = _many(PrefixSection(enabled=True))
    assert draws.min() == 1 and draws.max() == 32
    counts = torch.bincount(draws, minlength=33)[1:].float()
    expected = len(draws) / 32
    # 6400 draws, 200 per value: a value more than 35% off would be a broken sampler.
    assert (counts - expected).abs().max() < 0.35 * expected, counts
    one_step = draw_lengths(PrefixSection(enabled=True), 32, 64, step=0, seed=0)
    assert one_step is not None and len(one_step.unique()) > 10  # each image its own k


def test_per_batch_gives_one_k_per_step() -> None:
    section = PrefixSection(enabled=True, per="batch")
    ks = []
    for step in range(200):
        lengths = draw_lengths(section, 32, 8, step=step, seed=0)
        assert lengths is not None and lengths.shape == (8,) and len(lengths.unique()) == 1
        ks.append(int(lengths[0]))
    assert len(set(ks)) > 20


def test_pow2_mix_and_full_share() -> None:
    pow2 = _many(PrefixSection(enabled=True, distribution="pow2"))
    assert set(pow2.tolist()) == {1, 2, 4, 8, 16, 32}
    mix = _many(PrefixSection(enabled=True, distribution="mix"))
    share_pow2 = torch.isin(mix, torch.tensor([1, 2, 4, 8, 16, 32])).float().mean()
    # Half from pow2 (all powers) and half uniform (6 of 32 values are powers): about 0.59.
    assert 0.5 < share_pow2 < 0.68 and len(mix.unique()) == 32
    assert (_many(PrefixSection(enabled=True, full_share=1.0)) == 32).all()
    full = (_many(PrefixSection(enabled=True, full_share=0.5)) == 32).float().mean()
    assert 0.45 < full < 0.56  # 0.5 + 0.5 / 32


def test_with_full_adds_a_full_length_copy_of_every_image() -> None:
    plain = draw_lengths(PrefixSection(enabled=True), 32, 8, step=3, seed=0)
    both = draw_lengths(PrefixSection(enabled=True, with_full=True), 32, 8, step=3, seed=0)
    assert plain is not None and both is not None and both.shape == (16,)
    assert torch.equal(both[:8], plain) and (both[8:] == 32).all()
    batch = draw_lengths(PrefixSection(enabled=True, per="batch", with_full=True), 32, 4, step=3, seed=0)
    assert batch is not None and len(batch[:4].unique()) == 1 and (batch[4:] == 32).all()
    assert draw_lengths(PrefixSection(enabled=True, with_full=True, warmup_steps=5), 32, 4, 1, 0) is None


def test_lengths_depend_on_seed_step_and_process_only() -> None:
    s = PrefixSection(enabled=True)
    a = draw_lengths(s, 32, 16, step=7, seed=3, process_index=0)
    assert torch.equal(a, draw_lengths(s, 32, 16, step=7, seed=3, process_index=0))
    assert not torch.equal(a, draw_lengths(s, 32, 16, step=7, seed=3, process_index=1))
    assert not torch.equal(a, draw_lengths(s, 32, 16, step=8, seed=3, process_index=0))


def test_bad_prefix_keys_are_named(tmp_path: Path) -> None:
    for override, key in [
        ("prefix.per=image", "prefix.per"),
        ("prefix.distribution=normal", "prefix.distribution"),
        ("prefix.full_share=2", "prefix.full_share"),
        ("prefix.warmup_steps=-1", "prefix.warmup_steps"),
    ]:
        with pytest.raises(ConfigError, match=key):
            load_recipe(RECIPES / "tiny_single_stage.yaml", ["prefix.enabled=true", override])
    with pytest.raises(ConfigError, match="prefix.enabled"):
        load_recipe(RECIPES / "tiny_vqgan.yaml", ["prefix.enabled=true"])
    with pytest.raises(ConfigError, match="variable_length"):
        load_recipe(
            RECIPES / "tiny_single_stage.yaml", ["prefix.enabled=true", "model.variable_length=false"]
        ).titok_config(decoder_head="pixels")
    with pytest.raises(ConfigError, match="hidden_tail"):
        TiTokConfig(hidden_tail="token")
    with pytest.raises(ConfigError, match="prefix.with_full"):
        load_recipe(RECIPES / "tiny_generator.yaml", ["prefix.enabled=true", "prefix.with_full=true"])


# ---------------------------------------------------------------------------- which positions are seen


@pytest.mark.parametrize("hidden_tail", ["remove", "token"])
def test_the_decoder_sees_only_the_first_k_tokens(hidden_tail: str) -> None:
    model = _tiny(hidden_tail=hidden_tail)
    q = torch.randn(3, 8, 4)
    lengths = torch.tensor([1, 5, 8])
    with torch.no_grad():
        out = model.decode_latents(q, lengths)
        changed = q.clone()
        changed[0, 1:] = torch.randn(7, 4)  # hidden for sample 0
        changed[1, 5:] = torch.randn(3, 4)  # hidden for sample 1
        torch.testing.assert_close(model.decode_latents(changed, lengths), out)
        # Per-sample lengths give what decoding each prefix alone gives.
        for i, k in enumerate(lengths.tolist()):
            torch.testing.assert_close(
                model.decode_latents(q[i : i + 1, :k])[0], out[i], atol=1e-5, rtol=1e-5
            )
        # A visible token does change the output.
        changed[2, 7] = torch.randn(4)
        assert not torch.allclose(model.decode_latents(changed, lengths)[2], out[2])


def test_one_encoding_decoded_once_per_group_of_lengths() -> None:
    """lengths of 2B entries: each image decoded from its prefix and in full, copy-major."""
    model = _tiny()
    images = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        out = model(images, torch.tensor([1, 4, 8, 8, 8, 8])).decoded
        assert out.shape == (6, 3, 16, 16)
        full = model(images).decoded
        torch.testing.assert_close(out[3:], full)
        torch.testing.assert_close(out[:3], model(images, torch.tensor([1, 4, 8])).decoded)
        with pytest.raises(ValueError, match="multiple of the batch size"):
            model(images, torch.tensor([1, 2, 3, 4]))


def test_tail_token_trains_and_a_fixed_model_has_none() -> None:
    model = _tiny(hidden_tail="token").train()
    model(torch.rand(2, 3, 16, 16), torch.tensor([3, 8])).decoded.square().mean().backward()
    assert model.decoder.tail_token is not None and model.decoder.tail_token.grad.abs().sum() > 0
    assert "decoder.tail_token" not in _tiny(variable_length=False).state_dict()
    assert "decoder.tail_token" not in _tiny(hidden_tail="remove").state_dict()


# ---------------------------------------------------------------------------- inference API


def test_prefix_shapes_for_vq_and_vae() -> None:
    images = torch.rand(2, 3, 16, 16)
    model = _tiny()
    assert model.encode(images).shape == (2, 8)
    tokens = model.encode(images, num_tokens=3)
    assert tokens.shape == (2, 3) and torch.equal(tokens, model.encode(images)[:, :3])
    assert model.decode(tokens).shape == (2, 3, 16, 16)
    assert model.reconstruct(images, num_tokens=1).shape == (2, 3, 16, 16)
    vae = _tiny(quantize_mode="vae", use_l2_norm=False)
    assert vae.encode(images, num_tokens=5).shape == (2, 5, 4)
    assert vae.decode(vae.encode(images, num_tokens=5)).shape == (2, 3, 16, 16)
    for bad in (0, 9, 2.5):
        with pytest.raises(TitokError, match=r"num_tokens must be an integer in \[1, 8\]"):
            model.encode(images, num_tokens=bad)  # type: ignore[arg-type]
    with pytest.raises(TitokError, match="1 <= k <= 8"):
        model.decode(torch.zeros(2, 9, dtype=torch.long))


def test_a_fixed_length_model_refuses_prefixes_unless_forced() -> None:
    model = _tiny(variable_length=False)
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(TitokError, match="trained on all 8 tokens only.*force_prefix=True"):
        model.encode(images, num_tokens=4)
    with pytest.raises(TitokError, match="trained on all 8 tokens only"):
        model.decode(model.encode(images)[:, :4])
    with pytest.raises(TitokError, match="trained on all 8 tokens only"):
        model.reconstruct(images, num_tokens=2)
    assert model.reconstruct(images, num_tokens=2, force_prefix=True).shape == (2, 3, 16, 16)
    assert model.reconstruct(images, num_tokens=8).shape == (2, 3, 16, 16)


def test_prefix_curve_and_position_sensitivity_shapes() -> None:
    model = _tiny()
    images = torch.rand(4, 3, 16, 16)
    rows = prefix_curve(model, images)
    assert [r["num_tokens"] for r in rows] == [1, 2, 4, 8]
    assert rows[0]["psnr_gain"] == 0.0
    assert rows[1]["psnr_gain"] == pytest.approx(rows[1]["psnr"] - rows[0]["psnr"])
    sens = position_sensitivity(model, images)
    assert len(sens) == 8 and all(s >= 0 for s in sens)
    assert [r["num_tokens"] for r in prefix_curve(_tiny(variable_length=False), images)] == [8]


# ---------------------------------------------------------------------------- training


FAST = [
    "experiment.progress_bar=false",
    "experiment.image_every=0",
    "experiment.log_every=10",
    "data.augment=false",
    "data.shuffle_buffer=16",
    "losses.perceptual_loss=none",
    "losses.perceptual_weight=0",
    "losses.discriminator_start=100000",
    "prefix.enabled=true",
]


def test_resume_with_prefixes_continues_exactly(pictures: Path, tmp_path: Path) -> None:
    common = [
        *FAST,
        f"data.train={pictures}",
        "training.batch_size=3",
        "training.max_train_steps=6",
        "model.hidden_tail=token",
        "prefix.warmup_steps=2",
    ]

    def run(out: Path, *extra: str, resume: bool = False):  # noqa: ANN202
        recipe = load_recipe(RECIPES / "tiny_single_stage.yaml", [*common, *extra], mode="single_stage")
        return train(make_task(recipe), resume=resume, output_dir=out)

    straight = run(tmp_path / "straight")
    run(tmp_path / "split", "training.stop_at_step=3")
    second = run(tmp_path / "split", resume=True)
    assert second.start_step == 3 and second.step == 6
    a = ckpt.load_tensors(straight.checkpoint / "model.safetensors")
    b = ckpt.load_tensors(second.checkpoint / "model.safetensors")
    assert set(a) == set(b) and "decoder.tail_token" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [h["total"] for h in straight.history[3:]] == [h["total"] for h in second.history]
    exported = TiTok.from_pretrained(straight.export_dir)
    assert exported.config.variable_length and exported.config.hidden_tail == "token"


def _load_pictures(root: Path) -> torch.Tensor:
    return to_batch([Image.open(f) for f in sorted(root.glob("*/*.png"))], 16)


def test_a_tiny_prefix_run_improves_with_k(pictures: Path, tmp_path: Path) -> None:
    """400 steps on 16 pictures (16 px, 8 tokens): the reconstructions from 1, 2 and 4 tokens get
    better in that order, and all 8 are no worse than 4 (measured: 12.34, 12.78, 13.30, 13.30 dB)."""
    recipe = load_recipe(
        RECIPES / "tiny_single_stage.yaml",
        [
            *FAST,
            f"data.train={pictures}",
            "data.image_size=16",
            "model.image_size=16",
            "model.encoder_width=64",
            "model.decoder_width=64",
            "model.encoder_heads=2",
            "model.decoder_heads=2",
            "model.num_latent_tokens=8",
            "model.codebook_size=64",
            "model.dead_code_threshold=0.03",
            "model.latent_centering=true",
            "training.use_ema=false",
            "training.batch_size=16",
            "training.max_train_steps=400",
            "optimizer.learning_rate=2e-3",
            "optimizer.embedding_lr_scale=30",
            "lr_scheduler.warmup_steps=20",
        ],
        mode="single_stage",
    )
    result = train(make_task(recipe), output_dir=tmp_path / "run")
    model = TiTok.from_pretrained(result.export_dir)
    assert model.config.variable_length
    curve = {r["num_tokens"]: r["psnr"] for r in prefix_curve(model, _load_pictures(pictures))}
    assert curve[1] + 0.2 < curve[2] and curve[2] + 0.2 < curve[4] and curve[8] > curve[4] - 0.1, curve


# ---------------------------------------------------------------------------- generation at any length


def _tiny_generator(variable_length: bool, length_token: bool = False) -> Generator:
    config = GeneratorConfig(
        hidden_size=32,
        depth=1,
        heads=2,
        intermediate_size=64,
        codebook_size=16,
        seq_len=8,
        num_classes=3,
        variable_length=variable_length,
        length_token=length_token,
    )
    return Generator.from_config(config).eval()


@pytest.mark.parametrize("variable_length", [True, False])
def test_generation_of_the_first_k_tokens(variable_length: bool) -> None:
    gen = _tiny_generator(variable_length)
    for k in (1, 3, 8):
        seen: list[int] = []
        tokens = gen.generate(
            [0, 2], num_tokens=k, seed=0, on_step=lambda _s, ids, seen=seen: seen.append(ids.shape[1])
        )
        assert tokens.shape == (2, k) and int(tokens.min()) >= 0 and int(tokens.max()) < 16
        # A generator trained on prefixes samples k-token sequences; another one samples K and cuts.
        assert set(seen) == {k if variable_length else 8}
    if not variable_length:
        assert torch.equal(gen.generate([1], seed=3, num_tokens=3), gen.generate([1], seed=3)[:, :3])
    with pytest.raises(TitokError, match=r"num_tokens must be an integer in \[1, 8\]"):
        gen.generate([0], num_tokens=9)


@pytest.mark.parametrize("arch", ["bert", "uvit"])
def test_a_length_token_tells_the_generator_k(arch: str, tmp_path: Path) -> None:
    base = _tiny_generator(True, length_token=True).config
    gen = Generator.from_config(dataclasses.replace(base, arch=arch)).eval()
    assert gen.config.vocab_size == _tiny_generator(True).config.vocab_size + 8
    embed = gen.model.embeddings.word_embeddings if arch == "bert" else gen.embeddings
    tokens = torch.randint(0, 16, (2, 3))
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        five = torch.randint(0, 16, (2, 5))
        before3, before5 = gen(tokens, labels), gen(five, labels)
        # the network reads the token of its length: changing that of k = 3 changes 3-token outputs only
        embed.weight[gen.config.length_token_id(3)] += torch.randn(gen.config.hidden_size)
        assert not torch.allclose(gen(tokens, labels), before3)
        assert torch.allclose(gen(five, labels), before5)
    for k in (1, 4, 8):
        assert gen.generate([0, 1], num_tokens=k, seed=0).shape == (2, k)
    loaded = Generator.from_pretrained(gen.save_pretrained(tmp_path / arch))
    assert loaded.config.length_token
    assert torch.equal(loaded.generate([1], num_tokens=4, seed=2), gen.generate([1], num_tokens=4, seed=2))
    with pytest.raises(ConfigError, match="length_token needs variable_length"):
        _tiny_generator(False, length_token=True)


def test_generator_training_on_prefixes_exports_a_variable_length_generator(
    pictures: Path, tmp_path: Path
) -> None:
    tokenizer = _tiny()
    tokenizer.save_pretrained(tmp_path / "tok")
    data = DataConfig(path=str(pictures), batch_size=8)
    pretokenize(tokenizer, data, tmp_path / "tokens", model_name=str(tmp_path / "tok"), progress=False)
    recipe = load_recipe(
        RECIPES / "tiny_generator.yaml",
        [
            f"data.train={tmp_path / 'tokens'}",
            "experiment.progress_bar=false",
            "experiment.image_every=0",
            "training.max_train_steps=6",
            "training.batch_size=4",
            "model.num_classes=2",
            "model.class_names=null",
            "data.augment=false",
            "prefix.enabled=true",
            "model.length_token=true",
        ],
        mode="generator",
    )
    result = train(GeneratorTask(recipe), output_dir=tmp_path / "gen")
    gen = Generator.from_pretrained(result.export_dir)
    assert gen.config.variable_length and gen.config.length_token and gen.config.seq_len == 8
    assert gen.generate([0, 1], num_tokens=2, seed=0).shape == (2, 2)


# ---------------------------------------------------------------------------- command line


def test_cli_num_tokens_strips_and_the_refusal(capsys, tmp_path: Path, pictures: Path) -> None:
    from titok.cli import main

    flex = _tiny().save_pretrained(tmp_path / "flex")
    fixed = _tiny(variable_length=False).save_pretrained(tmp_path / "fixed")
    images = [str(p) for p in sorted(pictures.glob("*/*.png"))[:2]]
    assert (
        main(["tokenize", *images, "-o", str(tmp_path / "t.npz"), "-m", str(flex), "--num-tokens", "3"]) == 0
    )
    assert __import__("numpy").load(tmp_path / "t.npz")["tokens"].shape == (2, 3)
    out = tmp_path / "rec"
    assert main(["reconstruct", *images, "-o", str(out), "-m", str(flex), "-k", "2", "--strip"]) == 0
    strip = Image.open(out / f"{Path(images[0]).stem}_strip.png")
    assert strip.size == (16 * (1 + 4), 16)  # the original, then k = 1, 2, 4, 8
    assert Image.open(out / f"{Path(images[0]).stem}_reconstruction.png").size == (32, 16)
    capsys.readouterr()
    code = main(["reconstruct", *images, "-o", str(tmp_path / "r2"), "-m", str(fixed), "-k", "2"])
    err = capsys.readouterr().err
    assert code != 0 and "trained on all 8 tokens only" in err and "--force-prefix" in err
    assert len(err.strip().splitlines()) == 1, err
    forced = [
        "reconstruct",
        *images,
        "-o",
        str(tmp_path / "r3"),
        "-m",
        str(fixed),
        "-k",
        "2",
        "--force-prefix",
    ]
    assert main(forced) == 0
