"""MaskGIT generators: architecture against written-out references, sampling through the model,
input errors and class names. Loading and saving: test_generator_loading.py."""

from __future__ import annotations

import math

import pytest
import torch

from tests.generator_fixtures import PUBLISHED, C, K, N, small, tokens_and_labels
from titok.class_names import imagenet_classes, resolve_class
from titok.errors import ConfigError, TitokError
from titok.models.generator import (
    GENERATOR_PRESETS,
    BertGenerator,
    Generator,
    GeneratorConfig,
    UViTGenerator,
)

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
