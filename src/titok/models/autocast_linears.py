"""Every ``nn.Linear`` of a model held in the dtype of the autocast in force, for inference.

Autocast casts a Linear's weight and bias at every call, and in inference mode, where its weight
cache is off, a model called many times (a generator's decoding steps) pays that cast at every
call. :class:`LowPrecisionLinears`, owned by the model, casts them once and keeps the copies for
the next ``with`` block, as long as the weights stay the same.

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


class LowPrecisionLinears:
    """The low-precision copies of one model's Linears, kept between calls while its weights are unchanged.

    The model owns it (``self.low_precision_linears = LowPrecisionLinears()``); copies are keyed by
    the Linear's name in the model and are not saved, pickled or copied with it.
    """

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __getstate__(self) -> dict:
        return {"_held": {}}

    def release(self) -> None:
        """Drop the copies (they are made again at the next use)."""
        self._held.clear()

    def _hold(self, name: str, m: nn.Linear, dtype: torch.dtype, packing: bool) -> _Held:
        """``m``'s weights in ``dtype`` (packed if ``packing``), reused from the last call if unchanged."""
        held = self._held.get(name)
        if held is not None and held.copies(m, (dtype, packing)):
            return held
        self._held.pop(name, None)  # free the stale copies before making new ones
        weight = m.weight.detach().to(dtype)
        bias = None if m.bias is None else m.bias.detach().to(dtype)
        if packing:
            held = _Held(_sources(m), (dtype, packing), None, bias, _packed_forward(weight, bias, dtype))
        else:
            held = _Held(_sources(m), (dtype, packing), weight, bias, None)
        self._held[name] = held
        return held

    @contextlib.contextmanager
    def active(self, module: nn.Module, device_type: str) -> Iterator[None]:
        """Inside an autocast on ``device_type``, run every Linear of ``module`` from its copies until the exit.

        For inference only (no gradients flow through the copies). The copies (one per Linear,
        about half the float32 weights in bfloat16) are reused by the next call as long as the
        Linear has the same weight and bias tensors, unmodified (same version counter and storage:
        in-place writes through ``.data`` are not seen; :meth:`release` drops the copies).
        Outside autocast this does nothing. On exit every Linear has its own weight, bias and
        forward back.
        """
        low = autocast_dtype(device_type)
        if low is None:
            yield
            return
        packing = onednn_packing(device_type, low) and not torch.is_grad_enabled()
        kept = [(name, m, m.weight, m.bias) for name, m in module.named_modules() if isinstance(m, nn.Linear)]
        try:
            with torch.no_grad():
                for name, m, _, _ in kept:
                    held = self._hold(name, m, low, packing)
                    if held.forward is not None:
                        m.forward = held.forward  # type: ignore[method-assign]
                    elif held.weight is not None:
                        m.weight = nn.Parameter(held.weight, requires_grad=False)
                        if held.bias is not None:
                            m.bias = nn.Parameter(held.bias, requires_grad=False)
            yield
        finally:
            for _, m, weight, bias in kept:
                m.weight, m.bias = weight, bias
                m.__dict__.pop("forward", None)
