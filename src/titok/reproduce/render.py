"""The pieces both run reports are made of: numbers, tables, images, sections, grids, the file.

:mod:`titok.reproduce.report` (the full reproduction) and
:func:`titok.reproduce.builtin.write_report` (the built-in run) are each a list of markdown
lines put together from these helpers, so that the two reports format a number, a table or a
figure the same way and neither lays out markdown by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from titok.images import tensor_to_pil
from titok.reproduce.budget import Budget
from titok.training.monitor import image_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Run(Protocol):
    """What a report reads of a run (:class:`titok.reproduce.run_folder.Run`): its folder and state."""

    budget: Budget
    state: dict[str, Any]

    def path(self, *parts: str) -> Path: ...


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` decimals ("n/a" for NaN), anything else as ``str``."""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A markdown table; ``align`` has an ``l`` or ``r`` per column (default: all left-aligned)."""
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def image(alt: str, path: str) -> str:
    """A markdown image, ``path`` relative to the report."""
    return f"![{alt}]({path})"


def section(title: str, *blocks: str | None, level: int = 2) -> list[str]:
    """A heading and its paragraphs, tables or images, a blank line after each (None: left out)."""
    lines = ["#" * level + " " + title, ""]
    for block in blocks:
        if block is not None:
            lines += [block, ""]
    return lines


def write_markdown(path: Path, lines: Sequence[str]) -> Path:
    """Write ``lines`` to ``path``, ending in a single newline."""
    text = "\n".join(lines)
    path.write_text(text if text.endswith("\n") else text + "\n")
    return path


def find_key(metrics: Mapping[str, Any], prefix: str) -> str:
    """The first key of ``metrics`` that starts with ``prefix``: ``rFID`` finds ``rFID[<net>]``."""
    return next(k for k in metrics if k.startswith(prefix))


def feature_network(key: str) -> str:
    """The feature network of a metric key: ``imagenette64-resnet`` of ``rFID[imagenette64-resnet]``."""
    return key[key.index("[") + 1 : -1]


def sampling_text(sampling: Mapping[str, Any] | None) -> str:
    """A generator's recorded sampling settings (``sampling`` of ``generation.json``) in words;
    "" if not recorded."""
    if not sampling:
        return ""
    return (
        f"{sampling['num_steps']} steps, guidance scale {sampling['guidance_scale']:g} "
        f"({sampling['guidance_schedule']}), temperature {sampling['randomize_temperature']:g}"
    )


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """Images (N, 3, H, W) in [0, 1] as a PNG grid of rows of ``nrow`` (the last padded white)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [images[i : i + nrow] for i in range(0, len(images), nrow)]
    if len(rows) > 1 and len(rows[-1]) < nrow:
        pad = torch.ones(nrow - len(rows[-1]), *images.shape[1:])
        rows[-1] = torch.cat([rows[-1], pad])
    tensor_to_pil(image_grid(rows)).save(path)
    return path


def save_figure(fig: Figure, path: Path) -> str:
    """Write the matplotlib figure ``fig`` to ``path`` (PNG), close it, return the file name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name
