"""Reading and writing weight files, and matching them strictly against a model.

Two on-disk formats are understood:

* ``*.safetensors`` (our own format and the hub's ``model.safetensors``);
* ``*.bin`` / ``*.pt`` / ``*.pth`` PyTorch pickles, always read with ``weights_only=True``.

Matching is strict: every tensor of the file must be used and every parameter of the model
must be filled, with identical shapes. A mismatch raises :class:`CheckpointError` listing the
missing, unexpected and mis-shaped names, so a wrong file is never half-loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file

from titok.errors import CheckpointError

#: Most names listed in a mismatch message, per category.
_MAX_NAMES_SHOWN = 12

#: Version of the ``config.json`` written by :func:`save_model`.
FORMAT_VERSION = 1
#: Weight files of a model folder, in the order they are looked for.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: Endings of the weights files :func:`read_state_dict` reads: a name ending so is taken for a file.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def save_model(module: torch.nn.Module, directory: str | os.PathLike[str], kind: str, config: dict) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for ``module`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"library": "titok", "kind": kind, "format_version": FORMAT_VERSION, "config": config}
    (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def weights_in(folder: Path) -> Path:
    """The weights file of a model folder (see :data:`WEIGHT_FILES`)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: no weights file ({' or '.join(WEIGHT_FILES)})")


def build_and_load(build: Callable[[], ModuleT], weights: Path, source: str) -> ModuleT:
    """``build()`` on the meta device, filled strictly from ``weights``; returned in eval mode."""
    state = read_state_dict(weights)
    with torch.device("meta"):
        model = build()
    load_strict(model, state, source)
    return model.eval()


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors or PyTorch file onto the CPU.

    PyTorch pickles are read with ``weights_only=True``; a file wrapping its state dict in
    ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            return load_safetensors(str(path), device="cpu")
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file for the user
        raise CheckpointError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(obj)


def _shorten(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    more = len(names) - _MAX_NAMES_SHOWN
    return shown + (f" (+{more} more)" if more > 0 else "")


def mismatch_report(expected: Mapping[str, Sequence[int]], got: Mapping[str, Sequence[int]]) -> str | None:
    """Describe how ``got`` differs from ``expected`` (both name -> shape), or None if equal."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    misshaped = [
        f"{n} (expected {list(expected[n])}, got {list(got[n])})"
        for n in sorted(set(expected) & set(got))
        if list(expected[n]) != list(got[n])
    ]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {_shorten(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: {_shorten(unexpected)}")
    if misshaped:
        parts.append(f"mis-shaped {len(misshaped)}: {_shorten(misshaped)}")
    return "; ".join(parts) if parts else None


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state_dict`` into ``module``, refusing any missing, extra or mis-shaped tensor.

    ``source`` names the file (or repo) in the error message. Nothing is copied unless the
    whole state dict matches.
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    report = mismatch_report(expected, got)
    if report is not None:
        raise CheckpointError(f"{source}: weights do not match the model: {report}")
    if _is_meta(module):
        # Assigned tensors become the parameters: give them the module's dtypes (weights may be
        # stored in half precision).
        dtypes = {k: v.dtype for k, v in module.state_dict().items()}
        state = {k: v.to(dtypes[k]) if v.is_floating_point() else v for k, v in state_dict.items()}
        module.load_state_dict(state, strict=True, assign=True)
    else:
        module.load_state_dict(dict(state_dict), strict=True)


def _is_meta(module: torch.nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


__all__ = [
    "FORMAT_VERSION",
    "WEIGHT_FILES",
    "WEIGHT_SUFFIXES",
    "build_and_load",
    "load_strict",
    "mismatch_report",
    "read_state_dict",
    "save_model",
    "weights_in",
]
