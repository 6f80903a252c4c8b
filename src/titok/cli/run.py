"""Running a typer app as a command: exit codes, one-line user errors, missing optional extras.

User errors (:class:`titok.errors.TitokError`) print one line on stderr and exit with 2, and so
does a command whose optional dependency is not installed: the line names the extra to install.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from types import ModuleType

import click
import typer

from titok.errors import TitokError

#: Optional dependencies (top-level module names) and the extra of ``pyproject.toml`` that brings each.
EXTRAS: dict[str, str] = {
    "accelerate": "train",
    "braceexpand": "train",  # also in "eval"
    "tensorboard": "train",
    "scipy": "eval",
    "matplotlib": "demo",
    "torchvision": "vision",
    "timm": "vision",
    "gradio": "web",
}


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """The one-line message for a missing optional dependency; ``None`` for any other module."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    return f'this command needs the "{extra}" extra ({module} is not installed): pip install "titok[{extra}]"'


def _click_modules() -> list[ModuleType]:
    """The exception modules of click and of the click that typer raises from: typer 0.12-0.x
    raises click's own, later typers a copy bundled inside typer (``typer.BadParameter``'s module)."""
    bundled = sys.modules[typer.BadParameter.__module__]
    return [click.exceptions] if bundled is click.exceptions else [click.exceptions, bundled]


def _classes(name: str) -> tuple[type[BaseException], ...]:
    """Exception class ``name`` of every click in use, and typer's own (``typer.Exit``, ``typer.Abort``)."""
    found = [getattr(m, name, None) for m in _click_modules()] + [getattr(typer, name, None)]
    return tuple(dict.fromkeys(c for c in found if isinstance(c, type)))


def usage_line(exc: BaseException) -> str:
    """One line for a usage error: the problem and where the help is (``titok CMD --help``)."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
    return f"error: {' '.join(message.split())}{where}"


def run_app(app: typer.Typer, argv: list[str] | None = None, prog_name: str | None = None) -> int:
    """Run ``app`` on ``argv`` (default: the process arguments); returns the exit code.

    Usage errors (unknown command or option, a bad or missing value) print one line and exit
    with 2, whichever click typer raises them from.
    """
    try:
        return _run(app, argv, prog_name)
    except _classes("Exit") as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except _classes("Abort"):
        print("aborted", file=sys.stderr)
        return 130
    except _classes("ClickException") as exc:
        print(usage_line(exc), file=sys.stderr)
        return 2


def _run(app: typer.Typer, argv: list[str] | None, prog_name: str | None) -> int:
    try:
        # Outside standalone mode click hands back the code of a typer.Exit instead of exiting.
        code = app(args=argv, prog_name=prog_name, standalone_mode=False)
    except TitokError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        # A path of the user's that is the wrong kind (``-o`` naming a file) or not writable.
        what = {
            FileExistsError: "exists and is not a folder",
            NotADirectoryError: "a part of this path is a file, not a folder",
            IsADirectoryError: "is a folder, a file was expected",
            PermissionError: "permission denied",
        }[type(exc)]
        print(f"error: {exc.filename}: {what}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0


__all__ = ["EXTRAS", "missing_extra_message", "run_app"]
