"""Running a typer app as a command: exit codes, one-line user errors, missing optional extras.

User errors (:class:`titok.errors.TitokError`) print one line on stderr and exit with 2, and so
does a command whose optional dependency is not installed: the line names the extra to install.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click
import typer

from titok.errors import TitokError

#: Optional dependencies (top-level module names) and the extra of ``pyproject.toml`` that brings each.
EXTRAS: dict[str, str] = {
    "accelerate": "train",
    "webdataset": "train",
    "braceexpand": "train",
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


def run_app(app: typer.Typer, argv: list[str] | None = None, prog_name: str | None = None) -> int:
    """Run ``app`` on ``argv`` (default: the process arguments); returns the exit code."""
    try:
        # Outside standalone mode click hands back the code of a typer.Exit instead of exiting.
        code = app(args=argv, prog_name=prog_name, standalone_mode=False)
    except TitokError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.ClickException as exc:  # usage errors carry their own formatting
        exc.show()
        return exc.exit_code
    return code if isinstance(code, int) else 0


__all__ = ["EXTRAS", "missing_extra_message", "run_app"]
