"""MaskGIT generators: architecture against written-out references, published-format loading,
saving, sampling through the model, input errors and class names."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from titok.class_names import imagenet_classes, resolve_class
from titok.errors import CheckpointError, ConfigError, TitokError
from titok.models.generator import (
    GENERATOR_PRESETS,
    BertGenerator,
    Generator,
    GeneratorConfig,
    UViTGenerator,
    generator_config_from_json,
    generator_from_state_dict,
)
from titok.models.generator import model as generator_module

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "official-state-dicts.json"
PUBLISHED = {
    "titok-l32": "generator/titok_l32",
    "titok-b64": "generator/titok_b64",
    "titok-s128": "generator/titok_s128",
}
C, K, N = 32, 6, 7


@pytest.fixture(scope="module")
def reference() -> dict:
    if not REFERENCE.is_file():
        pytest.skip(f"reference file not found: {REFERENCE}")
    return json.loads(REFERENCE.read_text())


def small(preset: str = "tiny", **kw) -> Generator:
    torch.manual_seed(0)
    model = Generator.from_preset(
        preset, codebook_size=C, seq_len=K, num_classes=N, dropout=0.0, attn_dropout=0.0, **kw
    )
    with torch.no_grad():  # move LayerNorms and biases off their trivial initial values
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def tokens_and_labels(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, C + 1, (batch, K), generator=g), torch.randint(0, N, (batch,), generator=g)


# -- written-out references of the two published architectures --------------------------------------


def _ln(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _attention(q, k, v, heads):
    d = q.shape[-1] // heads
    out = []
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        weights = torch.softmax(q[..., s] @ k[..., s].transpose(-1, -2) / math.sqrt(d), dim=-1)
        out.append(weights @ v[..., s])
    return torch.cat(out, -1)


def reference_bert(sd: dict, cfg: GeneratorConfig, ids: torch.Tensor) -> torch.Tensor:
    def p(name):
        return sd["model." + name]

    def lin(x, name):
        return x @ p(name + ".weight").T + p(name + ".bias")

    e = "embeddings."
    x = p(e + "word_embeddings.weight")[ids] + p(e + "position_embeddings.weight")[: ids.shape[1]]
    x = _ln(
        x + p(e + "token_type_embeddings.weight")[0],
        p(e + "LayerNorm.weight"),
        p(e + "LayerNorm.bias"),
        1e-12,
    )
    for i in range(cfg.depth):
        layer = f"encoder.layer.{i}."
        a = layer + "attention."
        ctx = _attention(
            lin(x, a + "self.query"), lin(x, a + "self.key"), lin(x, a + "self.value"), cfg.heads
        )
        x = _ln(
            lin(ctx, a + "output.dense") + x,
            p(a + "output.LayerNorm.weight"),
            p(a + "output.LayerNorm.bias"),
            1e-12,
        )
        h = _gelu(lin(x, layer + "intermediate.dense"))
        x = _ln(
            lin(h, layer + "output.dense") + x,
            p(layer + "output.LayerNorm.weight"),
            p(layer + "output.LayerNorm.bias"),
            1e-12,
        )
    return lin(x, "lm_head")[:, 1:]


def reference_uvit(sd: dict, cfg: GeneratorConfig, ids: torch.Tensor) -> torch.Tensor:
    hidden = cfg.hidden_size

    def lin(x, name, bias=True):
        return x @ sd[name + ".weight"].T + (sd[name + ".bias"] if bias else 0)

    def block(x, name, skip=None):
        if skip is not None:
            x = lin(torch.cat([x, skip], -1), name + ".skip_linear")
        qkv = lin(
            _ln(x, sd[name + ".norm1.weight"], sd[name + ".norm1.bias"], 1e-5), name + ".attn.qkv", bias=False
        )
        x = x + lin(
            _attention(qkv[..., :hidden], qkv[..., hidden : 2 * hidden], qkv[..., 2 * hidden :], cfg.heads),
            name + ".attn.proj",
        )
        y = _ln(x, sd[name + ".norm2.weight"], sd[name + ".norm2.bias"], 1e-5)
        return x + lin(_gelu(lin(y, name + ".mlp.fc1")), name + ".mlp.fc2")

    x = sd["embeddings.weight"][ids] + sd["pos_embed"][0, : ids.shape[1]]
    skips = []
    for i in range(cfg.depth // 2):
        x = block(x, f"in_blocks.{i}")
        skips.append(x)
    x = block(x, "mid_block")
    for i in range(cfg.depth // 2):
        x = block(x, f"out_blocks.{i}", skips.pop())
    return lin(_ln(x, sd["norm.weight"], sd["norm.bias"], 1e-5), "lm_head")[:, 1:]


def test_vocabulary_layout():
    cfg = GeneratorConfig(codebook_size=C, num_classes=N, seq_len=K)
    assert (cfg.mask_token_id, cfg.no_class_token_id, cfg.vocab_size) == (C, C + N + 1, C + N + 2)
    model = small()
    assert model.class_tokens(torch.tensor([0, N - 1]), 2).tolist() == [C + 1, C + N]
    assert model.class_tokens(None, 2).tolist() == [C + N + 1] * 2


def test_from_config_is_the_one_factory():
    bert = GeneratorConfig(hidden_size=32, depth=2, heads=2, intermediate_size=64, codebook_size=C, seq_len=K)
    uvit = GeneratorConfig.from_dict({**bert.to_dict(), "arch": "uvit", "dropout": 0.0, "attn_dropout": 0.0})
    assert type(Generator.from_config(bert)) is BertGenerator
    assert type(Generator.from_config(uvit)) is UViTGenerator
    assert type(UViTGenerator(uvit)) is UViTGenerator
    with pytest.raises(TypeError, match=r"Generator\.from_config"):
        Generator(bert)
    with pytest.raises(ConfigError, match="BertGenerator needs arch 'bert', got 'uvit'"):
        BertGenerator(uvit)
    with pytest.raises(TypeError, match="GeneratorConfig"):
        Generator.from_config({"arch": "bert"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("preset", "reference_fn", "cls"),
    [("tiny", reference_bert, BertGenerator), ("tiny-uvit", reference_uvit, UViTGenerator)],
)
def test_forward_matches_written_out_reference(preset, reference_fn, cls):
    model = small(preset, depth=4)
    assert type(model) is cls
    tokens, labels = tokens_and_labels()
    sd = model.state_dict()
    with torch.no_grad():
        conditional = model(tokens, labels)
        unconditional = model(tokens, None)
    class_ids = labels + C + 1
    expected = reference_fn(sd, model.config, torch.cat([class_ids[:, None], tokens], 1))
    assert conditional.shape == (3, K, C)
    torch.testing.assert_close(conditional, expected, atol=1e-5, rtol=1e-5)
    no_class = torch.full((3, 1), C + N + 1)
    torch.testing.assert_close(
        unconditional, reference_fn(sd, model.config, torch.cat([no_class, tokens], 1)), atol=1e-5, rtol=1e-5
    )


def test_label_dropout_only_in_training():
    model = small(class_label_dropout=1.0)
    tokens, labels = tokens_and_labels()
    with torch.no_grad():
        conditional, unconditional = model(tokens, labels), model(tokens, None)
        assert torch.equal(model(tokens, labels, label_drop_prob=1.0), conditional)  # eval: never dropped
        model.train()
        torch.testing.assert_close(model(tokens, labels), unconditional)  # config: always dropped
        torch.testing.assert_close(model(tokens, labels, label_drop_prob=0.0), conditional)
        dropped = model.class_tokens(torch.zeros(4000, dtype=torch.long), 4000, drop_prob=0.1) == C + N + 1
        assert dropped.float().mean().item() == pytest.approx(0.1, abs=0.02)


def test_masked_logits_are_the_forward_logits_at_masked_positions():
    model = small()
    tokens, labels = tokens_and_labels()
    where = tokens == C
    with torch.no_grad():
        full = model(tokens, labels)
        part = model.masked_logits(tokens, model.class_tokens(labels, 3), where)
    torch.testing.assert_close(part, full[where])


def test_generate_is_seeded_and_in_range():
    model = small("tiny-uvit")
    model.train()
    a = model.generate([0, 3, 6], seed=7)
    assert model.training  # mode restored
    assert a.shape == (3, K) and a.dtype == torch.long and a.min() >= 0 and a.max() < C
    assert torch.equal(a, model.generate(torch.tensor([0, 3, 6]), seed=7))
    assert not torch.equal(a, model.generate([0, 3, 6], seed=8))
    assert torch.equal(a, model.generate([0, 3, 6], generator=torch.Generator().manual_seed(7)))
    torch.manual_seed(3)
    b = model.generate(
        [1, 2], num_steps=3, guidance_schedule="power-cosine", softmax_temperature_annealing=True
    )
    torch.manual_seed(3)
    assert torch.equal(
        b,
        model.generate(
            [1, 2], num_steps=3, guidance_schedule="power-cosine", softmax_temperature_annealing=True
        ),
    )
    a[0, 0] = 1  # a normal tensor, not an inference-mode one


def test_generate_steps_and_guidance_reach_the_model():
    model = small()
    batches: list[int] = []
    hook = model.model.embeddings.register_forward_hook(lambda m, i, o: batches.append(o.shape[0]))
    states: list[torch.Tensor] = []
    model.generate(
        [1, 2],
        num_steps=4,
        guidance_scale=2.0,
        guidance_schedule="linear",
        on_step=lambda s, ids: states.append(ids.clone()),
    )
    assert batches == [2, 4, 4, 4] and len(states) == 4
    batches.clear()
    model.generate([1, 2], num_steps=3, guidance_scale=0.0, guidance_schedule="constant")
    assert batches == [2, 2, 2]
    hook.remove()


def test_published_sampling_defaults():
    expect = {
        "titok-l32": (8, 4.5, "linear", 9.5),
        "titok-b64": (8, 3.0, "linear", 11.0),
        "titok-s128": (64, 6.9, "power-cosine", 2.8),
    }
    for name, values in expect.items():
        c = GENERATOR_PRESETS[name].config
        assert (c.num_steps, c.guidance_scale, c.guidance_schedule, c.randomize_temperature) == values
    assert GENERATOR_PRESETS["titok-s128"].config.guidance_power == 3.0


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_presets_shape_check_on_meta(name):
    with torch.device("meta"):
        model = Generator.from_preset(name)
        k = model.config.seq_len
        logits = model(torch.zeros(2, k, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    assert logits.shape == (2, k, 4096)


# -- published format ----------------------------------------------------------------------------------


def authors_config_json(entry: dict) -> dict:
    generator = dict(entry["config"])
    generator["image_seq_len"] = "${model.vq_model.num_latent_tokens}"  # as their saved configs may hold
    return {
        "experiment": {"generator_checkpoint": "generator.bin"},
        "model": {
            "vq_model": {
                "codebook_size": entry["codebook_size"],
                "num_latent_tokens": entry["config"]["image_seq_len"],
            },
            "generator": generator,
        },
        "dataset": {"preprocessing": {"crop_size": 256}},
    }


def reference_state(entry: dict) -> dict[str, torch.Tensor]:
    # Uninitialised storage: no page is touched until read, so even the 295M model is instant.
    return {name: torch.empty(shape) for name, shape in entry["state_dict"].items()}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_checkpoints_load_strictly(reference, tmp_path, name):
    entry = reference[PUBLISHED[name]]
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(authors_config_json(entry)))
    config = generator_config_from_json(config_path)
    assert config == GENERATOR_PRESETS[name].config
    state = reference_state(entry)
    model = generator_from_state_dict(config, state, "published")
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(loaded[k].data_ptr() == state[k].data_ptr() for k in state)  # assigned, not copied
    assert not model.training


def test_misshaped_or_missing_tensor_is_refused(reference):
    entry = reference["generator/titok_l32"]
    config = GENERATOR_PRESETS["titok-l32"].config
    state = reference_state(entry)
    del state["model.encoder.layer.3.output.dense.bias"]
    with pytest.raises(CheckpointError, match=r"missing 1: model\.encoder\.layer\.3\.output\.dense\.bias"):
        generator_from_state_dict(config, state, "l32.bin")
    state = reference_state(entry)
    state["model.lm_head.weight"] = torch.empty(4095, 768)
    with pytest.raises(
        CheckpointError,
        match=r"l32\.bin.*model\.lm_head\.weight \(expected \[4096, 768\], got \[4095, 768\]\)",
    ):
        generator_from_state_dict(config, state, "l32.bin")
    s128 = reference_state(reference["generator/titok_s128"])
    with pytest.raises(CheckpointError, match="missing"):
        generator_from_state_dict(config, s128, "s128 weights as l32")


def test_raw_file_name_gives_the_preset(reference, tmp_path, monkeypatch):
    path = tmp_path / "generator_titok_b64.bin"
    path.write_bytes(b"")
    monkeypatch.setattr(
        generator_module, "read_state_dict", lambda p: reference_state(reference["generator/titok_b64"])
    )
    model = Generator.from_pretrained(path)
    assert model.config == GENERATOR_PRESETS["titok-b64"].config
    other = tmp_path / "weights.bin"
    other.write_bytes(b"")
    with pytest.raises(CheckpointError, match="needs a preset"):
        Generator.from_pretrained(other)


def test_authors_folder_format_loads_small_model(tmp_path):
    model = small()
    c = model.config
    generator = {
        "model_type": "ViT",
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.depth,
        "num_attention_heads": c.heads,
        "intermediate_size": c.intermediate_size,
        "dropout": 0.1,
        "attn_drop": 0.1,
        "num_steps": 5,
        "class_label_dropout": 0.1,
        "image_seq_len": "${model.vq_model.num_latent_tokens}",
        "condition_num_classes": N,
        "randomize_temperature": 2.0,
        "guidance_scale": 1.5,
        "guidance_decay": "constant",
    }
    cfg = {
        "experiment": {},
        "model": {"vq_model": {"codebook_size": C, "num_latent_tokens": K}, "generator": generator},
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = Generator.from_pretrained(tmp_path)
    assert (loaded.config.num_steps, loaded.config.guidance_scale, loaded.config.guidance_schedule) == (
        5,
        1.5,
        "constant",
    )
    tokens, labels = tokens_and_labels()
    with torch.no_grad():
        assert torch.equal(loaded(tokens, labels), model(tokens, labels))


def test_raw_bin_with_preset_and_index_buffers(tmp_path):
    torch.manual_seed(0)
    model = Generator.from_preset("tiny").eval()
    state = dict(model.state_dict())
    state["model.embeddings.position_ids"] = torch.arange(33)[None]
    torch.save(state, tmp_path / "gen.bin")
    loaded = Generator.from_pretrained(tmp_path / "gen.bin", preset="tiny")
    tokens = torch.randint(0, 4097, (2, 32))
    with torch.no_grad():
        assert torch.equal(loaded(tokens, torch.tensor([5, 900])), model(tokens, torch.tensor([5, 900])))
    state["model.embeddings.position_ids"] = torch.arange(33)[None].flip(1)
    torch.save(state, tmp_path / "bad.bin")
    with pytest.raises(CheckpointError, match="position_ids"):
        Generator.from_pretrained(tmp_path / "bad.bin", preset="tiny")


@pytest.mark.parametrize("preset", ["tiny", "tiny-uvit"])
def test_save_pretrained_round_trip(tmp_path, preset):
    model = small(preset, guidance_scale=2.5, num_steps=6)
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (meta["library"], meta["kind"]) == ("titok", "generator")
    loaded = Generator.from_pretrained(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    tokens, labels = tokens_and_labels()
    with torch.no_grad():
        assert torch.equal(loaded(tokens, labels), model(tokens, labels))
    assert torch.equal(loaded.generate([1, 2], seed=0), model.generate([1, 2], seed=0))


def test_folder_and_config_errors(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"library": "titok", "kind": "generator", "config": {"depht": 2}})
    )
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unknown key.*depht"):
        Generator.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"library": "titok", "kind": "tokenizer", "config": {}}))
    with pytest.raises(CheckpointError, match="not a generator"):
        Generator.from_pretrained(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no weights file"):
        Generator.from_pretrained(empty)
    with pytest.raises(CheckpointError, match="no such file"):
        Generator.from_pretrained(tmp_path / "missing" / "model.safetensors")
    with pytest.raises(ConfigError, match="titok-l32"):
        Generator.from_preset("titok-l23")
    with pytest.raises(ConfigError, match="heads"):
        Generator.from_preset("tiny", heads=3)
    with pytest.raises(CheckpointError, match="no published weights"):
        Generator.from_pretrained("tiny")


def test_offline_download_error_names_what_to_get(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError) as info:
        Generator.from_pretrained("titok-l32")
    message = str(info.value)
    assert "yucornetto/generator_titok_l32_imagenet" in message and "generator_titok_l32.bin" in message
    with pytest.raises(CheckpointError, match="fun-research/TiTok"):
        Generator.from_pretrained("titok-b64", raw=True)
    with pytest.raises(CheckpointError, match="no raw state-dict file"):
        Generator.from_pretrained("titok-s128", raw=True)


# -- input errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"guidance_scale": -1.0}, "guidance_scale must be >= 0"),
        ({"num_steps": 0}, "num_steps must be a positive integer"),
        ({"num_steps": -2}, "num_steps must be a positive integer"),
        ({"guidance_schedule": "cosine"}, "guidance_schedule must be one of"),
        ({"randomize_temperature": -1.0}, "randomize_temperature"),
        ({"labels": [0, N]}, f"class label {N} out of range.*0..{N - 1}"),
        ({"labels": [-1]}, "class label -1 out of range"),
        ({"labels": [0.5]}, "integer class ids"),
        ({"labels": []}, "non-empty"),
        ({"labels": [[1, 2]]}, "1-D"),
    ],
)
def test_bad_generate_input(kwargs, message):
    model = small()
    labels = kwargs.pop("labels", [1])
    with pytest.raises(TitokError, match=message):
        model.generate(labels, **kwargs)


def test_bad_forward_input():
    model = small()
    with pytest.raises(TitokError, match=rf"shape \[batch, {K}\]"):
        model(torch.zeros(2, K + 1, dtype=torch.long))
    with pytest.raises(TitokError, match="labels must have shape"):
        model(torch.zeros(2, K, dtype=torch.long), torch.zeros(3, dtype=torch.long))


# -- class names -------------------------------------------------------------------------------------


def test_imagenet_class_list():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[0].startswith("tench") and classes[1].startswith("goldfish")
    assert classes[207] == "golden retriever" and classes[980] == "volcano"
    assert classes[999].startswith("toilet tissue")


def test_resolve_class_ids_and_names():
    assert resolve_class(207) == 207 and resolve_class(" 13 ") == 13
    assert resolve_class("Golden Retriever") == 207
    assert resolve_class("goldfish") == 1 and resolve_class("Carassius auratus") == 1
    assert resolve_class("tench, tinca tinca") == 0
    assert resolve_class("partridge") == 86  # a first name wins over a later synonym (82)
    assert resolve_class("B", ["a", "b, bee"]) == 1


def test_resolve_class_errors():
    with pytest.raises(
        TitokError, match=r"unknown class name 'golden retreiver'; close matches: 'golden retriever' \(207\)"
    ):
        resolve_class("golden retreiver")
    with pytest.raises(TitokError, match="ambiguous.*134.*517"):
        resolve_class("crane")
    with pytest.raises(TitokError, match="out of range"):
        resolve_class(1000)
    with pytest.raises(TitokError, match="out of range"):
        resolve_class(2, ["a", "b"])
    with pytest.raises(TitokError, match="id or a name"):
        resolve_class(True)


def test_generate_takes_class_names_and_an_unknown_name_lists_them() -> None:
    from titok.errors import TitokError
    from titok.models.generator import GeneratorConfig

    names = ["tench", "golf ball", "church"]
    config = GeneratorConfig(
        hidden_size=32,
        depth=1,
        heads=2,
        intermediate_size=64,
        codebook_size=16,
        seq_len=4,
        num_classes=3,
        class_names=names,
    )
    gen = Generator.from_config(config).eval()
    assert torch.equal(gen.generate(["golf ball", "Tench"], seed=0), gen.generate([1, 0], seed=0))
    with pytest.raises(TitokError, match="this model's classes: 0: tench, 1: golf ball, 2: church"):
        gen.generate(["golden retriever"])
