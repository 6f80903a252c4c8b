"""One precision rule for ``dtype=`` (titok.precision): None follows the caller's autocast,
float32 forces full precision, bfloat16 autocasts; tested on TiTok, GridTokenizer and
Generator.generate (its tokens: test_generator_precision.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from titok.models.generator import Generator
from titok.models.grid_tokenizer import GridTokenizer
from titok.models.titok import TiTok
from titok.models.vqgan import VQGAN, VQGANConfig
from titok.precision import autocast_dtype, cast_for_autocast, precision

BF16 = torch.bfloat16


def outer(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """The caller's context: a bfloat16 autocast, or none."""
    return torch.autocast("cpu", dtype=BF16) if enabled else contextlib.nullcontext()


def linear_dtypes(module: nn.Module, call: Callable[[], object]) -> set[torch.dtype]:
    """Output dtypes of every Linear and Conv2d of ``module`` during ``call()``."""
    seen: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        for m in module.modules()
        if isinstance(m, nn.Linear | nn.Conv2d)
    ]
    try:
        call()
    finally:
        for h in hooks:
            h.remove()
    assert seen, "no Linear or Conv2d ran"
    return seen


# (caller's autocast, dtype=) -> dtype the matrix products run in
RULE = [
    (False, None, torch.float32),
    (True, None, BF16),  # follows the caller
    (False, torch.float32, torch.float32),
    (True, torch.float32, torch.float32),  # forces full precision
    (False, BF16, BF16),
    (True, BF16, BF16),
]


@pytest.mark.parametrize(("caller", "dtype", "runs_in"), RULE)
def test_precision_context(caller, dtype, runs_in):
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with outer(caller), precision("cpu", dtype):
        assert (a @ b).dtype == runs_in
        assert autocast_dtype("cpu") == (None if runs_in == torch.float32 else BF16)


def test_cast_for_autocast_is_what_autocast_casts():
    x = torch.randn(3, 5)
    assert cast_for_autocast(x) is x
    with torch.autocast("cpu", dtype=BF16):
        low = cast_for_autocast(x)
        assert low.dtype == BF16 and torch.equal(low, x.to(BF16))
        assert cast_for_autocast(low) is low
        assert cast_for_autocast(x.double()).dtype == torch.float64  # autocast leaves float64 alone


@pytest.fixture(scope="module")
def tiny_titok() -> TiTok:
    torch.manual_seed(0)
    return TiTok.from_preset("titok-tiny-32").eval()


@pytest.mark.parametrize(("caller", "dtype", "runs_in"), RULE)
def test_titok_encode_and_decode_follow_the_rule(tiny_titok, caller, dtype, runs_in):
    model = tiny_titok
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = model.encode(x)
    with outer(caller):
        assert linear_dtypes(model.encoder, lambda: model.encode(x, dtype=dtype)) == {runs_in}
        assert linear_dtypes(model.decoder, lambda: model.decode(tokens, dtype=dtype)) == {runs_in}
        images = model.decode(tokens, dtype=dtype)
    assert images.dtype == torch.float32
    if runs_in == torch.float32:  # full precision whatever the caller opened
        assert torch.equal(images, model.decode(tokens))


@pytest.mark.parametrize(("caller", "dtype", "runs_in"), RULE)
def test_grid_tokenizer_follows_the_rule(caller, dtype, runs_in):
    torch.manual_seed(0)
    config = VQGANConfig(
        channel_mult=(1, 1), hidden_channels=32, num_res_blocks=1, z_channels=8, codebook_size=32
    )
    model = GridTokenizer(VQGAN(config), 16).eval()
    x = torch.rand(1, 3, 16, 16)
    tokens = model.encode(x)
    with outer(caller):
        assert linear_dtypes(model, lambda: model.encode(x, dtype=dtype)) == {runs_in}
        assert linear_dtypes(model, lambda: model.decode(tokens, dtype=dtype)) == {runs_in}


@pytest.mark.parametrize("preset", ["tiny", "tiny-uvit"])
@pytest.mark.parametrize(("caller", "dtype", "runs_in"), RULE)
def test_generator_follows_the_rule(preset, caller, dtype, runs_in):
    torch.manual_seed(0)
    model = Generator.from_preset(preset, codebook_size=32, seq_len=6, num_classes=5).eval()
    with outer(caller):
        seen = linear_dtypes(model, lambda: model.generate([1, 4], num_steps=3, seed=0, dtype=dtype))
    assert seen == {runs_in}
