"""Linears held in the autocast dtype: the values of a plain autocast, packed or not, kept until
the weights change."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from titok.models import autocast_linears
from titok.models.autocast_linears import linears_in_autocast_dtype, onednn_packing, release

BF16 = torch.bfloat16


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 40), nn.GELU(), nn.Linear(40, 16, bias=False)).eval()


@pytest.fixture(params=[True, False], ids=["packed", "cast"])
def packing(request, monkeypatch) -> bool:
    if request.param and not onednn_packing("cpu", BF16):
        pytest.skip("no oneDNN bfloat16 packing on this CPU")
    monkeypatch.setattr(autocast_linears, "onednn_packing", lambda device, dtype: request.param)
    return request.param


@pytest.mark.parametrize("shape", [(5, 24), (3, 7, 24)])
def test_values_are_those_of_a_plain_autocast(packing, shape):
    m, x = model(), torch.randn(shape)
    with torch.autocast("cpu", dtype=BF16), torch.inference_mode():
        expected = m(x)
        for _ in range(2):  # the first call makes the copies, the second reuses them
            with linears_in_autocast_dtype(m, "cpu"):
                assert ("forward" in vars(m[0])) == packing
                out = m(x)
            assert out.dtype == BF16 and torch.equal(out, expected)
    assert all("forward" not in vars(layer) for layer in m)
    assert m[0].weight.dtype == torch.float32


def test_copies_follow_the_weights(packing):
    m, x = model(), torch.randn(4, 24)
    with torch.autocast("cpu", dtype=BF16), torch.inference_mode():
        with linears_in_autocast_dtype(m, "cpu"):
            m(x)
        with torch.no_grad():
            m[2].weight.mul_(2.0)
        expected = m(x)
        with linears_in_autocast_dtype(m, "cpu"):
            assert torch.equal(m(x), expected)
    release(m)
    assert not any(layer in autocast_linears._HELD for layer in m)


def test_nothing_outside_autocast_and_no_packing_with_gradients():
    m = model()
    with linears_in_autocast_dtype(m, "cpu"):
        assert m[0].weight.dtype == torch.float32 and "forward" not in vars(m[0])
    with torch.autocast("cpu", dtype=BF16), linears_in_autocast_dtype(m, "cpu"):
        assert m[0].weight.dtype == BF16 and "forward" not in vars(m[0])
    assert m[0].weight.dtype == torch.float32
