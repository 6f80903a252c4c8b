"""``titok web``: the demo page (reconstruct, see and edit the tokens, generate by class) in a browser.

Needs the ``web`` extra (Gradio). One tokenizer and one generator are loaded before the page is
served and shared by every visitor; one that fails to load is reported here and on the page,
and the rest of the page still works. The tokenizer is ``--model``, else the one the generator
names (as for ``titok generate``), else the built-in default.

The page listens on 127.0.0.1 unless ``--host`` says otherwise. It has no authentication: on
another address, anyone who can reach it can use it.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Annotated

import typer

from titok.cli.generate import DEFAULT_GENERATOR, class_list_of, tokenizer_spec
from titok.cli.options import DeviceOpt, ModelOpt, PresetOpt, parse_device, resolve_model
from titok.errors import TitokError
from titok.models.generator import Generator
from titok.resources import builtin_generators_dir

if TYPE_CHECKING:
    import torch

    from titok.web.models import GeneratorLoader, LoadedGenerator, LoadedTokenizer, TokenizerLoader


def generator_loader(spec: str | None, device: torch.device) -> GeneratorLoader | None:
    """How to load ``--generator`` (default: the built-in one); None when there is none to load."""
    from titok.web.models import LoadedGenerator

    if spec is None and not (builtin_generators_dir() / DEFAULT_GENERATOR).is_dir():
        return None
    name = spec or DEFAULT_GENERATOR

    def load() -> LoadedGenerator:
        gen = Generator.from_pretrained(name).to(device).eval()
        return LoadedGenerator(gen, tuple(class_list_of(gen)), name)

    return load


def tokenizer_loader(
    spec: str | None, preset: str | None, generator_spec: str | None, device: torch.device
) -> TokenizerLoader:
    """How to load the tokenizer: ``--model``, else the generator's own, else the default."""
    from titok.web.models import LoadedTokenizer

    def load(generator: LoadedGenerator | None) -> LoadedTokenizer:
        chosen = spec
        if chosen is None and generator is not None:
            try:
                chosen = tokenizer_spec(generator_spec or DEFAULT_GENERATOR, generator.model, None)
            except TitokError:
                chosen = None  # a generator that names no tokenizer: the default one
        model, note = resolve_model(chosen, preset, device)
        return LoadedTokenizer(model.eval(), note)

    return load


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def web(
    model: ModelOpt = None,
    generator: Annotated[
        str | None,
        typer.Option(
            "--generator", "-g", help="Generator: preset, hub id or folder (default: the built-in one)."
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. The page has no authentication: keep 127.0.0.1 unless you mean it.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Port to listen on.")] = 7860,
    preset: PresetOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Serve the demo page: reconstruct an image, see and edit its tokens, generate a class."""
    dev = parse_device(device)
    from titok.web.app import serve  # needs Gradio: a missing "web" extra stops here, in one line
    from titok.web.models import SharedModels

    load_generator = generator_loader(generator, dev)
    models = SharedModels(
        tokenizer_loader(model, preset, generator, dev),
        load_generator,
        no_generator="the built-in generator is not installed; pass --generator",
    )
    for line in models.preload():
        typer.echo(line)
    if not is_loopback(host):
        typer.echo(
            f"warning: listening on {host}: the page has no authentication, anyone who can reach it can use it",
            err=True,
        )
    app = serve(models, host=host, port=port)
    typer.echo(f"serving the demo on http://{host}:{port} (Ctrl-C stops it)")
    app.block_thread()
