"""The precision rule of every inference call that takes ``dtype=``.

``TiTok.encode`` / ``decode`` / ``reconstruct``, ``GridTokenizer.encode`` / ``decode`` and
``Generator.generate`` all follow it:

* ``dtype=None``: the caller's precision. An autocast the caller opened applies to the whole call;
  without one the call runs in the model's own dtype (float32);
* ``dtype=torch.float32``: full precision, even inside an autocast the caller opened;
* a lower precision (``torch.bfloat16``; ``torch.float16`` on a GPU): autocast to it. Matrix
  products run in that dtype, the rest as autocast decides.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def precision(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """The context an inference call with ``dtype=`` runs in on ``device_type`` (see the module doc)."""
    if dtype is None:
        return contextlib.nullcontext()
    if dtype == torch.float32:
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=dtype)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype of the autocast in force on ``device_type``, or None outside any (and on devices,
    such as ``meta``, that autocast does not know)."""
    if not torch.amp.is_autocast_available(device_type) or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def cast_for_autocast(x: torch.Tensor) -> torch.Tensor:
    """``x`` as autocast would cast it for a matrix product, or ``x`` itself outside autocast.

    For an input shared by several products: autocast casts it again for each of them, this
    casts it once, to the same values.
    """
    if x.dtype != torch.float32:
        return x
    low = autocast_dtype(x.device.type)
    return x if low is None else x.to(low)
