"""Progress bars of the commands, and the lines printed while one runs.

A bar is drawn on stderr only when stderr is a terminal (in a log file or a pipe its redraws
would be debris), never with ``--quiet``, and not for a single item. Lines printed while a bar
runs go through :func:`say`, the bar's own writer: it clears the bar, prints the line and draws
the bar again below it.
"""

from __future__ import annotations

import sys
from typing import Annotated, TextIO

import typer
from tqdm import tqdm

QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress bars nor per-image lines (summary and errors remain)."),
]


def progress_bar(total: int, desc: str, quiet: bool = False, unit: str = "img") -> tqdm:
    """A bar for ``total`` items on stderr (see the module docstring for when it is hidden)."""
    # disable=None: tqdm hides the bar when its stream is not a terminal.
    disable = True if quiet or total < 2 else None
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable)


def say(bar: tqdm, line: str, file: TextIO | None = None) -> None:
    """Print ``line`` (to stdout by default) above ``bar``, never through it."""
    bar.write(line, file=file if file is not None else sys.stdout)


__all__ = ["QuietOpt", "progress_bar", "say"]
