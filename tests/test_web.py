"""The web demo's functions without a browser: models shared and loaded once, reconstruct, edit, generate.

The models are tiny and freshly initialised (seeded): the tests check what the page computes and
how it fails, never the quality of a trained model.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from titok.errors import ImageError, TitokError
from titok.models.generator import Generator
from titok.models.titok import TiTok
from titok.samples import bundled_samples_dir
from titok.web import actions
from titok.web.models import LoadedGenerator, LoadedTokenizer, ModelLoadError, SharedModels

CLASSES = ("cat", "dog", "fish")


def tiny_tokenizer() -> TiTok:
    torch.manual_seed(0)
    return TiTok.from_preset("titok-tiny-32").eval()  # 32 px, 16 tokens, 1024 codes


def tiny_generator(seq_len: int = 16) -> Generator:
    torch.manual_seed(0)
    return Generator.from_preset(
        "tiny", codebook_size=1024, seq_len=seq_len, num_classes=len(CLASSES), class_names=list(CLASSES)
    ).eval()


class CountingLoaders:
    """Loaders that count their calls; ``fail`` makes the named one raise."""

    def __init__(self, fail: str = "", seq_len: int = 16) -> None:
        self.calls = {"tokenizer": 0, "generator": 0}
        self.fail = fail
        self.seq_len = seq_len
        self.given: list[LoadedGenerator | None] = []

    def tokenizer(self, generator: LoadedGenerator | None) -> LoadedTokenizer:
        self.calls["tokenizer"] += 1
        self.given.append(generator)
        if self.fail == "tokenizer":
            raise FileNotFoundError("no such model: broken-model")
        return LoadedTokenizer(tiny_tokenizer(), "tiny tokenizer")

    def generator(self) -> LoadedGenerator:
        self.calls["generator"] += 1
        if self.fail == "generator":
            raise RuntimeError("Error(s) in loading state_dict")
        return LoadedGenerator(tiny_generator(self.seq_len), CLASSES, "tiny generator")

    def models(self) -> SharedModels:
        return SharedModels(self.tokenizer, self.generator)


@pytest.fixture(scope="module")
def models() -> SharedModels:
    return CountingLoaders().models()


@pytest.fixture
def sample() -> Path:
    return sorted(bundled_samples_dir().glob("*.jpg"))[0]


# -- the shared models ------------------------------------------------------------------------------


def test_each_model_is_loaded_once_and_shared_by_concurrent_requests(sample: Path) -> None:
    loaders = CountingLoaders()
    models = loaders.models()
    barrier = threading.Barrier(2)
    results: list[actions.Reconstruction | BaseException] = [None, None]  # type: ignore[list-item]

    def request(i: int) -> None:
        barrier.wait()
        try:
            results[i] = actions.reconstruct(models, sample)
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=request, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    first, second = results
    assert isinstance(first, actions.Reconstruction), first
    assert isinstance(second, actions.Reconstruction), second
    assert first.tokens == second.tokens
    assert loaders.calls == {"tokenizer": 1, "generator": 1}
    assert models.tokenizer() is models.tokenizer()
    assert models.generator() is models.generator()
    assert loaders.given[0] is models.generator()  # the tokenizer loader sees the generator


def test_a_model_that_fails_to_load_is_an_error_each_time_and_the_rest_still_works(sample: Path) -> None:
    loaders = CountingLoaders(fail="generator")
    models = loaders.models()
    for _ in range(2):
        with pytest.raises(ModelLoadError, match="generator could not be loaded: Error"):
            actions.generate(models, "cat")
    assert len(actions.reconstruct(models, sample).tokens) == 16
    assert loaders.calls["generator"] == 1
    assert loaders.given == [None]  # the tokenizer is loaded without it
    assert models.preload() == [
        "generator: the generator could not be loaded: Error(s) in loading state_dict",
        "tokenizer: tiny tokenizer",
    ]

    broken = CountingLoaders(fail="tokenizer").models()
    with pytest.raises(ModelLoadError, match="tokenizer could not be loaded: no such model"):
        actions.reconstruct(broken, sample)


def test_without_a_generator_generation_says_why() -> None:
    models = SharedModels(CountingLoaders().tokenizer, None, no_generator="none is installed")
    assert not models.has_generator
    with pytest.raises(ModelLoadError, match="generation is off: none is installed"):
        actions.generate(models, "cat")


def test_tokenizers_without_code_ids_are_refused() -> None:
    vae = TiTok.from_preset("titok-tiny-32", quantize_mode="vae")
    models = SharedModels(lambda _gen: LoadedTokenizer(vae, "vae"))
    with pytest.raises(ModelLoadError, match="discrete tokens"):
        models.tokenizer()


def test_a_generator_that_does_not_fit_the_tokenizer_is_refused() -> None:
    models = CountingLoaders(seq_len=32).models()
    with pytest.raises(TitokError, match="does not fit the generator"):
        actions.generate(models, "cat")


# -- images -----------------------------------------------------------------------------------------


def test_an_upload_that_is_not_an_image_is_a_one_line_error(tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("these are notes, not pixels")
    with pytest.raises(ImageError, match=r"notes.png: not an image file"):
        actions.load_image(fake)
    with pytest.raises(ImageError, match="no such file"):
        actions.load_image(tmp_path / "missing.png")


def test_a_huge_image_is_resized_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (actions.MAX_SIDE * 2, 50), (200, 10, 10)).save(path)
    image, notes = actions.load_image(path)
    assert image.size == (actions.MAX_SIDE, 25)
    assert len(notes) == 1 and f"({actions.MAX_SIDE * 2}×50)" in notes[0] and "resized" in notes[0]


def test_an_image_too_large_to_open_safely_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels is then a "bomb"
    with pytest.raises(ImageError, match="too large to decode safely"):
        actions.load_image(path)


def test_enlarge_scales_by_whole_factors() -> None:
    assert actions.enlarge(Image.new("RGB", (64, 64))).size == (256, 256)
    assert actions.enlarge(Image.new("RGB", (100, 50))).size == (300, 150)
    big = Image.new("RGB", (256, 256))
    assert actions.enlarge(big) is big


# -- reconstruct and edit ---------------------------------------------------------------------------


def test_reconstruct_gives_tokens_the_image_psnr_and_time(models: SharedModels, sample: Path) -> None:
    rec = actions.reconstruct(models, sample)
    assert len(rec.tokens) == 16 and all(0 <= t < 1024 for t in rec.tokens)
    assert rec.input.size == rec.image.size == (32, 32)
    assert rec.psnr == pytest.approx(actions.image_psnr(rec.image, rec.input), abs=0.05)
    assert rec.seconds > 0
    assert any("centre crop" in note for note in rec.notes)
    assert actions.decode(models, rec.tokens).tobytes() == rec.image.tobytes()
    bf16 = actions.reconstruct(models, sample, "bfloat16")
    assert len(bf16.tokens) == 16
    with pytest.raises(TitokError, match="precision must be one of float32, bfloat16"):
        actions.reconstruct(models, sample, "float8")


def test_replacing_one_token_changes_that_token_and_the_image(models: SharedModels, sample: Path) -> None:
    rec = actions.reconstruct(models, sample)
    new_code = (rec.tokens[3] + 512) % 1024
    edited = actions.replace_token(rec.tokens, 3.0, float(new_code), 1024)
    assert edited[3] == new_code and edited[:3] + edited[4:] == rec.tokens[:3] + rec.tokens[4:]
    assert actions.decode(models, edited).tobytes() != rec.image.tobytes()
    for position, code, message in [
        (16, 0, "position must be from 0 to 15"),
        (0, 1024, "token id"),
        (1.5, 0, "whole"),
    ]:
        with pytest.raises(TitokError, match=message):
            actions.replace_token(rec.tokens, position, code, 1024)
    with pytest.raises(TitokError, match="token id must be a whole number"):
        actions.replace_token(rec.tokens, 0, None, 1024)  # type: ignore[arg-type]
    with pytest.raises(TitokError, match="reconstruct an image first"):
        actions.decode(models, [1, 2, 3])


def test_mixing_two_sequences() -> None:
    a, b = list(range(8)), list(range(100, 108))
    assert actions.first_from_a(a, b, 3) == [0, 1, 2, 103, 104, 105, 106, 107]
    assert actions.first_from_a(a, b, 0) == b and actions.first_from_a(a, b, 8) == a
    with pytest.raises(TitokError, match="n must be from 0 to 8"):
        actions.first_from_a(a, b, 9)
    new_a, new_b = actions.swap_positions(a, b, [0, 7])
    assert new_a == [100, 1, 2, 3, 4, 5, 6, 107] and new_b == [0, 101, 102, 103, 104, 105, 106, 7]
    assert actions.parse_positions("0-2, 5 7", 8) == [0, 1, 2, 5, 7]
    assert actions.parse_positions(" 3,3 ,2-3", 8) == [2, 3]
    for text in ("", "x", "5-2", "0-8", "-1"):
        with pytest.raises(TitokError, match="positions"):
            actions.parse_positions(text, 8)


def test_the_token_grid_marks_changed_and_masked_positions() -> None:
    grid = actions.token_grid_html([5, 6, 1024, 7], changed=[1], mask_id=1024, title="<tokens>")
    assert grid.count("<td") == 4 and "<caption>&lt;tokens&gt;</caption>" in grid
    assert 'data-pos="1" data-token="6" class="changed"' in grid
    assert 'data-pos="2" data-token="1024" class="masked"' in grid and "·" in grid
    assert actions.token_grid_html(list(range(32))).count("<tr>") == 4


# -- generate -------------------------------------------------------------------------------------------


def test_generate_records_every_step_as_the_masked_tokens_fill_in(models: SharedModels) -> None:
    result = actions.generate(models, "dog", num_samples=3, num_steps=4, seed=7)
    assert result.class_name == "dog" and len(result.samples) == 3
    assert all(img.size == (32, 32) for img in result.samples)
    assert len(result.steps) == 4 and all(len(step) == 3 and len(step[0]) == 16 for step in result.steps)
    masked = [sum(t == result.mask_id for t in step[0]) for step in result.steps]
    assert masked == sorted(masked, reverse=True) and masked[0] < 16 and masked[-1] == 0
    again = actions.generate(models, "1", num_samples=3, num_steps=4, seed=7)  # by id, same seed
    assert again.steps == result.steps

    bf16 = actions.generate(models, "fish", num_samples=1, num_steps=2, precision_name="bfloat16")
    assert len(bf16.samples) == 1 and len(bf16.steps) == 2

    frames = actions.decode_steps(models, result.steps, result.mask_id, 2, "float32")
    assert len(frames) == 5
    assert frames[0][1] == "0/4: 0/16" and frames[-1][1] == "4/4: 16/16"
    final = models.tokenizer().model.decode(torch.tensor([result.steps[-1][2]]))
    assert torch.allclose(actions.pil_to_tensor(frames[-1][0]), final[0], atol=1 / 255)


def test_generate_uses_the_generators_own_sampling_defaults() -> None:
    """Settings left unset are the model's (its config), not numbers of the page's own."""
    models = CountingLoaders().models()
    config = models.generator().model.config
    config.num_steps, config.guidance_scale, config.randomize_temperature = 3, 0.0, 0.0
    default = actions.generate(models, "dog", num_samples=2, seed=1)
    assert len(default.steps) == 3
    explicit = actions.generate(
        models, "dog", num_samples=2, seed=1, num_steps=3, guidance_scale=0.0, temperature=0.0
    )
    assert explicit.steps == default.steps


def test_generate_refuses_an_unknown_class_and_impossible_settings(models: SharedModels) -> None:
    with pytest.raises(TitokError, match="unknown class name 'zebra'"):
        actions.generate(models, "zebra")
    with pytest.raises(TitokError, match="class id 3 out of range"):
        actions.generate(models, "3")
    with pytest.raises(TitokError, match="pick a class"):
        actions.generate(models, " ")
    with pytest.raises(TitokError, match="samples must be from 1 to"):
        actions.generate(models, "cat", num_samples=0)
    with pytest.raises(TitokError, match="guidance_schedule must be one of"):
        actions.generate(models, "cat", guidance_schedule="cosine")
    with pytest.raises(TitokError, match="guidance_scale must be >= 0"):
        actions.generate(models, "cat", guidance_scale=-1.0)
    with pytest.raises(TitokError, match="generate first"):
        actions.decode_steps(models, [], 1024, 0, "float32")


# -- the page's error handling ----------------------------------------------------------------------


def test_page_errors_show_a_line_and_leave_the_other_outputs() -> None:
    gr = pytest.importorskip("gradio")
    from titok.web.app import page_errors

    status = gr.Markdown()

    def wrong_input(x: int) -> tuple[int, str]:
        raise TitokError(f"bad <{x}>")

    def bug(x: int) -> tuple[int, str]:
        raise KeyError("oops")

    assert page_errors(wrong_input, status)(3) == {
        status: '<span class="titok-error">error: bad &lt;3&gt;</span>'
    }
    (line,) = page_errors(bug, status)(3).values()
    assert "internal error (KeyError: &#x27;oops&#x27;)" in line and "Traceback" not in line
    assert page_errors(lambda x: (x, "ok"), status)(5) == (5, "ok")


def test_an_error_on_the_page_lands_in_its_tab_status_line() -> None:
    """Each event's error goes to the status line of its own tab (keyed by component, not by
    position), and Gradio's own post-processing leaves every other output, state included, as it was."""
    gr = pytest.importorskip("gradio")
    from gradio.state_holder import SessionState

    from titok.web.app import build_app

    app = build_app(CountingLoaders().models())
    checked = 0
    for block_fn in app.fns.values():
        statuses = [c for c in block_fn.outputs if (c.elem_id or "").endswith("-status")]
        if not statuses or block_fn.fn is None:
            continue
        arguments = [None] * len(inspect.signature(block_fn.fn).parameters)  # no page yet: an error
        result = block_fn.fn(*arguments)
        if isinstance(result, tuple) and all(value == gr.skip() for value in result):
            continue  # an event with nothing to do before a first result (the length slider)
        assert isinstance(result, dict) and list(result) == statuses, block_fn.name
        assert "error: " in result[statuses[0]] and "internal error" not in result[statuses[0]]
        session = SessionState(app)
        stateful = [c for c in block_fn.outputs if c.stateful]
        for component in stateful:
            session[component._id] = {"page": "before"}
        values = asyncio.run(app.postprocess_data(block_fn, result, session))
        for component, value in zip(block_fn.outputs, values, strict=True):
            if component is statuses[0]:
                assert "error: " in str(value), block_fn.name
            elif component.stateful:
                assert session[component._id] == {"page": "before"}, block_fn.name
            else:  # an update that changes nothing
                assert isinstance(value, dict) and value.get("__type__") == "update", block_fn.name
                assert "value" not in value and "value" not in value.get("props", {}), block_fn.name
        checked += 1
    assert checked >= 7


# -- what `titok web` loads ---------------------------------------------------------------------------


def test_the_tokenizer_follows_the_generator_unless_one_is_given(tmp_path: Path) -> None:
    from titok.cli.web import generator_loader, tokenizer_loader

    folder = tmp_path / "gen"
    torch.manual_seed(0)
    Generator.from_preset(
        "tiny", codebook_size=1024, seq_len=16, num_classes=3, class_names=list(CLASSES), tokenizer="tok"
    ).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder / "tok")
    cpu = torch.device("cpu")

    load_generator = generator_loader(str(folder), cpu)
    assert load_generator is not None
    generator = load_generator()
    assert generator.class_names == CLASSES and generator.description == str(folder)
    followed = tokenizer_loader(None, None, str(folder), cpu)(generator)
    assert followed.description == str(folder / "tok") and followed.model.num_tokens == 16
    given = tokenizer_loader("titok-tiny-64", None, str(folder), cpu)(generator)
    assert given.model.num_tokens == 32 and "freshly initialised" in given.description

    models = SharedModels(tokenizer_loader(None, None, str(folder), cpu), load_generator)
    assert len(actions.generate(models, "fish", num_samples=1, num_steps=2).samples) == 1


def test_only_loopback_addresses_count_as_local() -> None:
    from titok.cli.web import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.10", "::", "example.org"))


def test_the_page_builds_with_working_and_with_broken_models() -> None:
    gr = pytest.importorskip("gradio")
    from titok.web.app import build_app

    def texts(app: gr.Blocks) -> str:
        return "\n".join(str(b.value) for b in app.blocks.values() if isinstance(b, gr.Markdown))

    app = build_app(CountingLoaders().models())
    assert app.delete_cache == (300, 900), "uploads must not stay on disk for the server's lifetime"
    working = texts(app)
    assert "worth 16 tokens" in working and "Tokenizer: **tiny tokenizer**" in working
    assert "Generator: **tiny generator**, 3 classes" in working
    broken = texts(build_app(CountingLoaders(fail="tokenizer").models()))
    assert "error: the tokenizer could not be loaded: no such model: broken-model" in broken
    assert "Generator: **tiny generator**" in broken
