"""Root of the ``titok`` command: sub-commands are registered here.

User errors (:class:`titok.errors.TitokError`) print one line on stderr and exit with 2; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from titok.errors import TitokError

app = typer.Typer(
    name="titok",
    help="TiTok 1D image tokenizer: tokenize, reconstruct, train, generate, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from titok.cli import catalog, demo, generate, inference, pretokenize
    from titok.cli.evaluate import bench, eval_app

    app.command("demo")(demo.demo)
    app.command("presets")(catalog.presets)
    app.command("info")(catalog.info)
    app.command("tokenize")(inference.tokenize)
    app.command("reconstruct")(inference.reconstruct)
    app.command("pretokenize")(pretokenize.pretokenize)
    app.command("generate")(generate.generate)
    app.add_typer(eval_app, name="eval")
    app.command("bench")(bench)
    from titok.cli.reproduce import reproduce

    app.command("reproduce")(reproduce)
    try:
        from titok.cli_train import app as train_app
    except ImportError:  # training extras not installed
        train_app = None
    if train_app is not None:
        app.add_typer(train_app, name="train", help="Train tokenizers (and generators).")


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``titok`` script; returns the exit code."""
    try:
        # Outside standalone mode click hands back the code of a typer.Exit instead of exiting.
        code = app(args=argv, standalone_mode=False)
    except TitokError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except Exception as exc:  # click usage errors carry their own formatting
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
