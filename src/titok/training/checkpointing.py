"""Training checkpoints: atomic files, a folder per step, the last K kept, exact resume state.

A checkpoint is a folder ``<output_dir>/checkpoint-<step:08d>/`` holding:

* ``meta.json``: step, number of processes, mode, format version;
* ``<module>.safetensors`` for every trained module (``model``, ``discriminator``) and
  ``ema.safetensors`` for the moving average;
* ``state.pt``: optimizer, scheduler and grad-scaler states, EMA update count, task state;
* ``rank-<r>.pt`` for every process ``r``: its RNG states (python, numpy, torch, CUDA), its data
  stream position and its task state.

Every file is written to a temporary name and moved into place with :func:`os.replace`; the
folder itself is assembled as ``.checkpoint-<step>.tmp`` and renamed when complete, so a crash
never leaves a half-written checkpoint under a real name. ``.pt`` files are read back with
``weights_only=True``.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from titok.errors import CheckpointError

FORMAT = "titok.training/1"
_NAME = re.compile(r"^checkpoint-(\d+)$")


# ---------------------------------------------------------------------------- atomic files


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            write(tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        except Exception as exc:  # noqa: BLE001 - safetensors and torch wrap OSError in their own errors
            if _disk_full(exc):
                raise CheckpointError(
                    f"{path.parent}: the disk is full (writing {path.name}); nothing was replaced, the "
                    "previous checkpoint is intact: free some space and resume with --resume"
                ) from exc
            raise
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _disk_full(exc: BaseException) -> bool:
    """True if ``exc`` (or what caused it) says the disk is full (ENOSPC, or safetensors' message)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def save_torch(obj: Any, path: Path) -> Path:
    """``torch.save`` atomically."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: Path) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU, with a clear error for a bad file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file is the user's problem
        raise CheckpointError(f"{path}: cannot read checkpoint file ({type(exc).__name__}: {exc})") from exc


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    """Write tensors (moved to CPU, made contiguous) as safetensors, atomically."""
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata={"format": "pt"}))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file of a checkpoint; a missing or damaged file is a :class:`CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing from the checkpoint")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error for a cut file
        raise CheckpointError(f"{path}: cannot read checkpoint file ({type(exc).__name__}: {exc})") from exc


def write_json(data: Any, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


# ---------------------------------------------------------------------------- RNG states


def capture_rng() -> dict[str, Any]:
    """The RNG states of this process: python ``random``, numpy, torch CPU and CUDA."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- checkpoint folders


def checkpoint_path(root: str | os.PathLike[str], step: int) -> Path:
    return Path(root) / f"checkpoint-{step:08d}"


def checkpoint_step(folder: Path) -> int:
    """The step in a checkpoint folder's name (``checkpoint-00000750`` -> 750)."""
    m = _NAME.match(folder.name)
    if m is None:
        raise CheckpointError(f"{folder}: not a checkpoint folder name (checkpoint-NNNNNNNN)")
    return int(m[1])


def list_checkpoints(root: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints under ``root`` (those with ``meta.json``), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        (int(m[1]), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / "meta.json").is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def read_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder}: unreadable meta.json ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder}: checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def staging_path(root: str | os.PathLike[str], step: int) -> Path:
    return Path(root) / f".checkpoint-{step:08d}.tmp"


def prepare_staging(root: str | os.PathLike[str], step: int) -> Path:
    """Create an empty staging folder for the checkpoint of ``step`` (main process only)."""
    staging = staging_path(root, step)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def commit(root: str | os.PathLike[str], step: int, meta: dict[str, Any], keep_last: int) -> Path:
    """Seal the staging folder of ``step`` as ``checkpoint-<step>`` and prune old ones (main process).

    ``meta.json`` is written last, so a folder without it is incomplete and ignored.
    """
    staging = staging_path(root, step)
    write_json({"format": FORMAT, "step": step, **meta}, staging / "meta.json")
    final = checkpoint_path(root, step)
    if final.exists():
        old = final.with_name(final.name + ".old")
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old)
    else:
        os.replace(staging, final)
    for stale in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def clean_interrupted(root: str | os.PathLike[str]) -> list[Path]:
    """Tidy what a save cut short left in ``root`` (main process, before training starts).

    Staging folders are deleted; a ``checkpoint-<step>.old`` (a checkpoint being replaced) is put
    back under its name when the replacement never arrived, else deleted. Returns what was removed.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".checkpoint-") and entry.name.endswith(".tmp") and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        elif _NAME.match(entry.name.removesuffix(".old")) and entry.name.endswith(".old"):
            final = entry.with_name(entry.name.removesuffix(".old"))
            if final.exists():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
            else:
                os.replace(entry, final)
    return removed


def rank_file(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank}.pt"
