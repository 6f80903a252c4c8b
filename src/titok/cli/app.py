"""Root of the ``titok`` command: sub-commands are registered here.

Every command module imports only the core dependencies at start-up; training, data-streaming and
evaluation modules are imported inside the commands that use them, so ``titok --help`` and the
inference commands work on a core install (see :mod:`titok.cli.run` for errors and exit codes).
"""

from __future__ import annotations

import sys

import typer

from titok.cli.run import run_app

app = typer.Typer(
    name="titok",
    help="TiTok 1D image tokenizer: tokenize, reconstruct, train, generate, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from titok.cli import (
        bench,
        catalog,
        demo,
        evaluate,
        generate,
        inference,
        pretokenize,
        reproduce,
        train,
        web,
    )

    app.command("demo")(demo.demo)
    app.command("presets")(catalog.presets)
    app.command("info")(catalog.info)
    app.command("tokenize")(inference.tokenize)
    app.command("reconstruct")(inference.reconstruct)
    app.command("pretokenize")(pretokenize.pretokenize)
    app.command("generate")(generate.generate)
    app.add_typer(evaluate.eval_app, name="eval")
    app.command("bench")(bench.bench)
    app.command("reproduce")(reproduce.reproduce)
    app.add_typer(train.app, name="train", help="Train tokenizers (and generators).")
    app.command("web")(web.web)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``titok`` script; returns the exit code."""
    return run_app(app, argv)


if __name__ == "__main__":
    sys.exit(main())
