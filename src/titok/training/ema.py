"""Exponential moving average of a model's parameters.

The decay warms up as ``min(decay, (1 + t) / (10 + t))`` where ``t`` counts updates (minus one),
so early averages follow the weights closely; this and the default ``decay = 0.999`` are the
TiTok training defaults. Trainable parameters are averaged; frozen ones are copied as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """Moving average of the parameters of ``model`` (kept on the model's device, float32 or
    the parameter's dtype).

    Args:
        model: the (unwrapped) model whose parameters are averaged.
        decay: largest decay.
        warmup: use the ``(1 + t) / (10 + t)`` warm-up (else ``decay`` from the first update).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {n: p.detach().clone() for n, p in model.named_parameters()}

    def current_decay(self) -> float:
        """Decay of the next update."""
        t = self.num_updates  # the (num_updates + 1)-th update uses t = num_updates
        if t <= 0:
            return 0.0
        return min(self.decay, (1.0 + t) / (10.0 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the current parameters of ``model``."""
        decay = self.current_decay()
        for name, param in model.named_parameters():
            shadow = self.shadow[name]
            if param.requires_grad:
                shadow.lerp_(param.detach().to(shadow.dtype), 1.0 - decay)
            else:
                shadow.copy_(param.detach())
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the parameters of ``model`` with the average."""
        for name, param in model.named_parameters():
            param.copy_(self.shadow[name].to(param.dtype))

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Run a block with the averaged weights in ``model``; its own weights come back exactly after."""
        backup = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    param.copy_(backup[name])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The averaged parameters by name (for safetensors)."""
        return dict(self.shadow)

    def load_tensors(self, tensors: dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore from :meth:`tensors` and the update count; names and shapes must match."""
        if set(tensors) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(tensors))[:5]
            extra = sorted(set(tensors) - set(self.shadow))[:5]
            raise ValueError(f"EMA state does not match the model (missing {missing}, unexpected {extra})")
        for name, value in tensors.items():
            self.shadow[name].copy_(value)
        self.num_updates = int(num_updates)
