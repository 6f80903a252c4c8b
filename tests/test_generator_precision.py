"""Generated tokens under each precision: float32 tokens for a fixed seed are those the sampler
gave before ``generate`` took ``dtype=`` (literals below), and bfloat16 through ``dtype=`` gives
the tokens of a plain autocast around the model while casting the weights once per call."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from titok.models.generator import Generator
from titok.sampling import SamplingSettings, confidence_decode

BF16 = torch.bfloat16


def build(preset: str) -> Generator:
    """A small random-weight generator (64 codes, 12 tokens, 10 classes) with non-trivial norms."""
    torch.manual_seed(0)
    model = Generator.from_preset(
        preset, codebook_size=64, seq_len=12, num_classes=10, dropout=0.0, attn_dropout=0.0
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


CASES: dict[str, tuple[str, list[int] | None, dict[str, Any]]] = {
    "bert-linear": ("tiny", [0, 3, 5, 9], {}),  # the preset's 8 steps, linear guidance 3.0, temperature 4.5
    "bert-constant-annealed": (
        "tiny",
        [1, 2, 7],
        {
            "num_steps": 5,
            "guidance_scale": 2.0,
            "guidance_schedule": "constant",
            "softmax_temperature_annealing": True,
        },
    ),
    "uvit-power-cosine": (
        "tiny-uvit",
        [4, 8, 0],
        {
            "num_steps": 6,
            "guidance_scale": 4.0,
            "guidance_schedule": "power-cosine",
            "randomize_temperature": 2.0,
        },
    ),
    "bert-unconditional": ("tiny", None, {"num_samples": 3}),
}

#: ``build(preset).generate(labels, seed=11, **kw)`` in float32, recorded with the sampler of
#: commit 5331177 (before ``dtype=``, the cast-once weights and the in-place Gumbel noise); one
#: sequence per ``;``.
FLOAT32_TOKENS = {
    "bert-linear": "16 47 13 52 50 15 5 62 60 62 17 22; 42 57 52 9 9 50 58 62 2 59 52 20; 48 49 51 20 42 37 5 13 52 62 6 1; 60 20 27 20 48 42 27 43 27 0 2 7",
    "bert-constant-annealed": "36 20 20 24 47 31 62 62 1 6 13 13; 29 42 17 20 5 13 42 27 27 59 20 6; 28 60 20 45 16 13 5 36 20 51 27 30",
    "uvit-power-cosine": "36 14 52 3 36 38 3 34 17 3 36 3; 16 44 38 7 48 38 17 60 17 59 7 17; 28 48 14 7 13 7 7 36 44 44 42 48",
    "bert-unconditional": "36 6 20 20 5 36 33 52 5 21 29 47; 16 20 20 20 12 53 16 53 2 2 28 20; 16 16 20 50 41 16 27 36 20 60 5 50",
}


def recorded(case: str) -> list[list[int]]:
    return [[int(v) for v in row.split()] for row in FLOAT32_TOKENS[case].split(";")]


@pytest.fixture(scope="module")
def models() -> dict[str, Generator]:
    return {preset: build(preset) for preset in ("tiny", "tiny-uvit")}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [None, torch.float32])
def test_float32_tokens_are_unchanged(models, case, dtype):
    preset, labels, kw = CASES[case]
    tokens = models[preset].generate(labels, seed=11, dtype=dtype, **kw)
    assert tokens.tolist() == recorded(case)


@pytest.mark.parametrize("case", list(CASES))
def test_float32_forced_inside_the_callers_autocast(models, case):
    preset, labels, kw = CASES[case]
    with torch.autocast("cpu", dtype=BF16):
        tokens = models[preset].generate(labels, seed=11, dtype=torch.float32, **kw)
    assert tokens.tolist() == recorded(case)


def plain_autocast_tokens(model: Generator, labels: list[int] | None, **kw: Any) -> torch.Tensor:
    """The bfloat16 path before ``dtype=``: the sampler around ``masked_logits`` in a plain autocast
    (which casts the weights at every step)."""
    num_samples = kw.pop("num_samples", None)
    if labels is None:
        class_tokens = model.class_tokens(None, num_samples)
        kw.update(guidance_scale=0.0, guidance_schedule="constant")
    else:
        class_tokens = model.class_tokens(torch.tensor(labels), len(labels))
    annealing = kw.pop("softmax_temperature_annealing", False)
    settings: SamplingSettings = model.config.sampling_settings(**kw, softmax_temperature_annealing=annealing)
    with torch.autocast("cpu", dtype=BF16), torch.inference_mode():
        return confidence_decode(
            model.masked_logits,
            class_tokens,
            model.no_class_token_id,
            model.config.seq_len,
            model.mask_token_id,
            settings,
            generator=torch.Generator().manual_seed(11),
        )


@pytest.mark.parametrize("case", list(CASES))
def test_bfloat16_tokens_are_those_of_a_plain_autocast(models, case):
    preset, labels, kw = CASES[case]
    model = models[preset]
    expected = plain_autocast_tokens(model, labels, **dict(kw))
    assert torch.equal(model.generate(labels, seed=11, dtype=BF16, **kw), expected)
    with torch.autocast("cpu", dtype=BF16):  # dtype=None follows the caller's autocast
        assert torch.equal(model.generate(labels, seed=11, **kw), expected)


class _WeightCasts(TorchDispatchMode):
    """Counts the casts of the given tensors (by storage) while active."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.counts = {t.data_ptr(): 0 for t in tensors}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        casts = (torch.ops.aten.to, torch.ops.aten._to_copy)
        if func.overloadpacket in casts and args[0].data_ptr() in self.counts:
            self.counts[args[0].data_ptr()] += 1
        return func(*args, **(kwargs or {}))


def test_bfloat16_casts_the_weights_once_per_call_and_restores_them(models):
    model = models["tiny"]
    before = {name: p for name, p in model.named_parameters()}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    weights = [p for m in linears for p in (m.weight, m.bias) if p is not None]
    outputs: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda m, i, out: outputs.append(out.dtype)) for m in linears]
    try:
        counts = []
        for steps in (2, 4):
            model.low_precision_linears.release()
            with _WeightCasts(weights) as casts:
                model.generate([1, 2], num_steps=steps, seed=0, dtype=BF16)
            counts.append(casts.counts)
        assert counts[0] == counts[1] and min(counts[0].values()) >= 1  # once per call, not per step
        assert outputs and set(outputs) == {BF16}
        outputs.clear()
        model.generate([1, 2], num_steps=2, seed=0)
        assert set(outputs) == {torch.float32}

        def stop(step: int, ids: torch.Tensor) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            model.generate([1, 2], num_steps=4, seed=0, dtype=BF16, on_step=stop)
    finally:
        for h in hooks:
            h.remove()
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    assert all(after[name] is p and p.dtype == torch.float32 for name, p in before.items())
    assert not any("forward" in vars(m) for m in linears)


def test_bfloat16_keeps_the_cast_weights_until_they_change():
    model = build("tiny")
    head = model.code_head()
    weights = [
        p for m in model.modules() if isinstance(m, nn.Linear) for p in (m.weight, m.bias) if p is not None
    ]
    model.generate([1, 2], num_steps=2, seed=0, dtype=BF16)
    with _WeightCasts(weights) as casts:
        model.generate([1, 2], num_steps=2, seed=0, dtype=BF16)
    assert set(casts.counts.values()) == {0}  # kept from the last call
    with torch.no_grad():
        head.weight.mul_(-1.0)  # in place: a new version
    with _WeightCasts(weights) as casts:
        tokens = model.generate([4, 8], seed=11, dtype=BF16)
    recast = {ptr for ptr, n in casts.counts.items() if n}
    assert recast == {head.weight.data_ptr(), head.bias.data_ptr()}  # that Linear only
    assert torch.equal(tokens, plain_autocast_tokens(model, [4, 8]))
    head.weight = nn.Parameter(torch.randn_like(head.weight))  # a new tensor
    assert torch.equal(model.generate([4, 8], seed=11, dtype=BF16), plain_autocast_tokens(model, [4, 8]))


def test_unconditional_pass_is_skipped_where_the_scale_is_zero_in_bfloat16(models):
    model = models["tiny"]
    batches: list[int] = []
    hook = model.model.embeddings.register_forward_hook(lambda m, i, o: batches.append(o.shape[0]))
    try:
        model.generate([1, 2], num_steps=4, guidance_scale=2.0, guidance_schedule="linear", dtype=BF16)
    finally:
        hook.remove()
    assert batches == [2, 4, 4, 4]  # the linear schedule is 0 at the first step: one pass
