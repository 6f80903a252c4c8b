"""Every ``nn.Linear`` of a model held in the dtype of the autocast in force, for inference.

Autocast casts a Linear's weight and bias at every call, and in inference mode, where its weight
cache is off, a model called many times (a generator's decoding steps) pays that cast at every
call. :func:`linears_in_autocast_dtype` casts them once and keeps the copies for the next
``with`` block, as long as the weights stay the same.

In bfloat16 on an AVX-512 CPU it also stores each weight in oneDNN's packed layout and runs the
Linear as oneDNN's ``_linear_pointwise`` (bias fused into the product): the same bfloat16 matrix
product autocast runs, to the same values, without re-packing the weight at every call.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from titok.precision import autocast_dtype


def onednn_packing(device_type: str, dtype: torch.dtype) -> bool:
    """Whether Linears in ``dtype`` on ``device_type`` run from oneDNN-packed weights (see the module doc)."""
    return (
        device_type == "cpu"
        and dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def _packed_forward(
    weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Linear's forward on a packed ``weight``; the input is cast to ``dtype`` as autocast would."""
    packed = torch.ops.mkldnn._reorder_linear_weight(weight)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(dtype), packed, bias, "none", [], "")

    return forward


#: ``(weak reference, version, data pointer)`` of a Linear's weight and bias (None without one).
_Sources = tuple[tuple["weakref.ref[torch.Tensor]", int, int] | None, ...]


def _sources(m: nn.Linear) -> _Sources:
    return tuple(
        None if t is None else (weakref.ref(t), t._version, t.data_ptr()) for t in (m.weight, m.bias)
    )


@dataclass
class _Held:
    """A Linear's weight and bias in a low dtype (or its packed forward), and what they copy."""

    sources: _Sources
    key: tuple[torch.dtype, bool]
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    forward: Callable[[torch.Tensor], torch.Tensor] | None

    def copies(self, m: nn.Linear, key: tuple[torch.dtype, bool]) -> bool:
        """Whether this holds ``m``'s current weight and bias, unmodified, as ``key`` asks."""
        if self.key != key:
            return False
        for source, t in zip(self.sources, (m.weight, m.bias), strict=True):
            if t is None or source is None:
                if t is not source:
                    return False
            elif source[0]() is not t or source[1:] != (t._version, t.data_ptr()):
                return False
        return True


#: The last low-precision copies of each Linear, kept between calls while its weights are unchanged.
_HELD: weakref.WeakKeyDictionary[nn.Linear, _Held] = weakref.WeakKeyDictionary()


def _hold(m: nn.Linear, dtype: torch.dtype, packing: bool) -> _Held:
    """``m``'s weights in ``dtype`` (packed if ``packing``), reused from the last call if unchanged."""
    held = _HELD.get(m)
    if held is not None and held.copies(m, (dtype, packing)):
        return held
    _HELD.pop(m, None)  # free the stale copies before making new ones
    weight = m.weight.detach().to(dtype)
    bias = None if m.bias is None else m.bias.detach().to(dtype)
    if packing:
        held = _Held(_sources(m), (dtype, packing), None, bias, _packed_forward(weight, bias, dtype))
    else:
        held = _Held(_sources(m), (dtype, packing), weight, bias, None)
    _HELD[m] = held
    return held


def release(module: nn.Module) -> None:
    """Drop the low-precision copies kept for the Linears of ``module``."""
    for m in module.modules():
        _HELD.pop(m, None)  # type: ignore[call-overload]


@contextlib.contextmanager
def linears_in_autocast_dtype(module: nn.Module, device_type: str) -> Iterator[None]:
    """Inside an autocast on ``device_type``, hold every Linear of ``module`` in its dtype until the exit.

    For inference only (no gradients flow through the copies). The copies are kept (one per
    Linear, about half the float32 weights in bfloat16) and reused by the next call as long as
    the Linear has the same weight and bias tensors, unmodified (same version counter and
    storage: in-place writes through ``.data`` are not seen; :func:`release` drops the copies).
    Outside autocast this does nothing. On exit every Linear has its own weight, bias and
    forward back.
    """
    low = autocast_dtype(device_type)
    if low is None:
        yield
        return
    packing = onednn_packing(device_type, low) and not torch.is_grad_enabled()
    kept = [(m, m.weight, m.bias) for m in module.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            for m, _, _ in kept:
                held = _hold(m, low, packing)
                if held.forward is not None:
                    m.forward = held.forward  # type: ignore[method-assign]
                elif held.weight is not None:
                    m.weight = nn.Parameter(held.weight, requires_grad=False)
                    if held.bias is not None:
                        m.bias = nn.Parameter(held.bias, requires_grad=False)
        yield
    finally:
        for m, weight, bias in kept:
            m.weight, m.bias = weight, bias
            m.__dict__.pop("forward", None)
