"""Linears held in the autocast dtype: the values of a plain autocast, packed or not, kept until
the weights change."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from titok.models import autocast_linears
from titok.models.autocast_linears import LowPrecisionLinears, onednn_packing

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
    m, x, copies = model(), torch.randn(shape), LowPrecisionLinears()
    with torch.autocast("cpu", dtype=BF16), torch.inference_mode():
        expected = m(x)
        for _ in range(2):  # the first call makes the copies, the second reuses them
            with copies.active(m, "cpu"):
                assert ("forward" in vars(m[0])) == packing
                out = m(x)
            assert out.dtype == BF16 and torch.equal(out, expected)
    assert all("forward" not in vars(layer) for layer in m)
    assert m[0].weight.dtype == torch.float32


def test_copies_follow_the_weights(packing):
    m, x, copies = model(), torch.randn(4, 24), LowPrecisionLinears()
    with torch.autocast("cpu", dtype=BF16), torch.inference_mode():
        with copies.active(m, "cpu"):
            m(x)
        with torch.no_grad():
            m[2].weight.mul_(2.0)
        expected = m(x)
        with copies.active(m, "cpu"):
            assert torch.equal(m(x), expected)
    assert len(copies) == 2
    copies.release()
    assert len(copies) == 0


def test_nothing_outside_autocast_and_no_packing_with_gradients():
    m, copies = model(), LowPrecisionLinears()
    with copies.active(m, "cpu"):
        assert m[0].weight.dtype == torch.float32 and "forward" not in vars(m[0])
    with torch.autocast("cpu", dtype=BF16), copies.active(m, "cpu"):
        assert m[0].weight.dtype == BF16 and "forward" not in vars(m[0])
    assert m[0].weight.dtype == torch.float32


def test_copies_belong_to_their_owner_and_are_not_pickled():
    import copy
    import pickle

    m, copies = model(), LowPrecisionLinears()
    with torch.autocast("cpu", dtype=BF16), torch.inference_mode(), copies.active(m, "cpu"):
        m(torch.randn(2, 24))
    assert len(copies) == 2 and len(LowPrecisionLinears()) == 0
    assert len(pickle.loads(pickle.dumps(copies))) == 0 and len(copy.deepcopy(copies)) == 0
