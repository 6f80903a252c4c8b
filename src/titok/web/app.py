"""The Gradio page of ``titok web``: three tabs over :mod:`titok.web.actions`.

* **Reconstruct**: upload an image or pick a bundled sample; its tokens as a grid, the
  reconstruction beside the model's input, PSNR and time; replace one token and see the change.
* **Mix two images**: the first n tokens from image A and the rest from B, and positions swapped
  between them.
* **Generate**: samples of a class, and the decoding steps of one sample as its tokens fill in.

Every handler shows a wrong input, or a model that failed to load, as a line in its tab; the
server goes on serving. Per-page state (token ids, the model's input) lives in ``gr.State``; the
models are the one :class:`~titok.web.models.SharedModels` given to :func:`build_app`.
Gradio's analytics are off and nothing is fetched from outside: the page works offline.
"""

from __future__ import annotations

import functools
import html
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from titok.errors import TitokError
from titok.models.generator.config import GeneratorConfig
from titok.resources import bundled_samples_dir
from titok.sampling import GUIDANCE_SCHEDULES
from titok.web import actions
from titok.web.models import ModelLoadError, SharedModels

log = logging.getLogger("titok.web")

#: Height of the image views, in pixels.
IMAGE_HEIGHT = 280
#: Largest upload the server accepts.
MAX_FILE_SIZE = "50mb"
#: Gradio's upload and result cache: every 5 minutes, files older than 15 minutes are deleted (an
#: upload is otherwise kept on disk for as long as the server runs).
CACHE_CLEANUP = (300, 900)

CSS = """
.titok-grid { border-collapse: collapse; font-family: ui-monospace, monospace; font-size: 13px; }
.titok-grid caption { text-align: left; font-size: 12px; padding-bottom: 2px; }
.titok-grid td { border: 1px solid #d4d4d8; padding: 1px 6px; text-align: right; min-width: 3.4em; }
.titok-grid td .pos { display: block; font-size: 9px; color: #8a8a96; text-align: left; }
.titok-grid td.changed { background: #fde68a; color: #000; }
.titok-grid td.masked { color: #a1a1aa; }
.titok-error { color: #b91c1c; }
"""


def error_markdown(message: str) -> str:
    return f'<span class="titok-error">error: {html.escape(message)}</span>'


def page_errors(fn: Callable[..., Any], status: gr.components.Component) -> Callable[..., Any]:
    """``fn`` whose errors become a line in the ``status`` component.

    On an error the result is ``{status: line}``, keyed by the component itself: Gradio updates
    that output only and leaves the others as they are, whatever their order in the event.
    A :class:`TitokError` is a wrong input or a model that failed to load: its message is shown.
    Anything else is a bug: its traceback goes to the server log and the page says so.
    """

    @functools.wraps(fn)
    def guarded(*args: Any) -> Any:
        try:
            return fn(*args)
        except TitokError as exc:
            message = str(exc)
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            message = f"internal error ({type(exc).__name__}: {exc}); the server log has the details"
        return {status: error_markdown(message)}

    return guarded


def _sample_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(bundled_samples_dir().glob("*.jpg"))}


def _chosen_file(upload: str | None, sample: str | None, samples: dict[str, Path]) -> str | Path:
    """The uploaded file, else the picked sample."""
    if upload:
        return upload
    if sample:
        if sample not in samples:
            raise TitokError(f"no bundled sample named {sample!r}")
        return samples[sample]
    raise TitokError("upload an image or pick a bundled sample first")


def _header(models: SharedModels) -> tuple[str, int, int]:
    """The page's first lines, and the token count and codebook size the widgets are built for."""
    lines = []
    num_tokens, codebook_size = 32, 1024  # the widgets' ranges when the tokenizer failed to load
    try:
        tok = models.tokenizer()
        model = tok.model
        num_tokens, codebook_size = model.num_tokens, model.codebook_size
        lines.append(
            f"Tokenizer: **{html.escape(tok.description)}**: {model.image_size}×{model.image_size} pixels, "
            f"{num_tokens} tokens from a codebook of {codebook_size}."
        )
    except ModelLoadError as exc:
        lines.append(error_markdown(str(exc)))
    try:
        gen = models.generator()
        lines.append(f"Generator: **{html.escape(gen.description)}**, {len(gen.class_names)} classes.")
    except ModelLoadError as exc:
        lines.append(error_markdown(str(exc)) if models.has_generator else str(exc).capitalize() + ".")
    title = f"## TiTok: an image is worth {num_tokens} tokens"
    return "\n\n".join([title, "  \n".join(lines)]), num_tokens, codebook_size


def _image_picker(
    label: str, elem: str, samples: dict[str, Path], sample: str | None
) -> tuple[gr.File, gr.Dropdown]:
    """An upload box and a sample list; choosing one clears the other."""
    upload = gr.File(label=label, file_types=["image"], type="filepath", elem_id=f"{elem}-upload", height=110)
    picked = gr.Dropdown(
        list(samples), value=sample, label="or a bundled sample", elem_id=f"{elem}-sample", interactive=True
    )
    upload.upload(lambda: None, outputs=picked, queue=False)
    picked.input(lambda: None, outputs=upload, queue=False)
    return upload, picked


def _view(label: str, elem: str) -> gr.Image:
    """An image the page shows (not an input)."""
    return gr.Image(label=label, interactive=False, height=IMAGE_HEIGHT, elem_id=elem)


def _precision(elem: str) -> gr.Radio:
    return gr.Radio(list(actions.PRECISIONS), value="float32", label="Precision", elem_id=elem)


def _length_slider(models: SharedModels, num_tokens: int, elem: str) -> gr.Slider:
    """The number of tokens to decode: 1 to K for a tokenizer trained on prefixes, else fixed at K."""
    try:
        variable = models.tokenizer().model.config.variable_length
    except ModelLoadError:
        variable = False
    info = "the first k tokens (coarse to fine)" if variable else "this tokenizer decodes all its tokens only"
    return gr.Slider(
        1, num_tokens, value=num_tokens, step=1, label="Tokens", info=info, interactive=variable, elem_id=elem
    )


def _reconstruct_tab(
    models: SharedModels, samples: dict[str, Path], num_tokens: int, codebook_size: int
) -> None:
    state = gr.State({})
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            upload, sample = _image_picker("Upload an image", "recon", samples, None)
            precision = _precision("recon-precision")
            length = _length_slider(models, num_tokens, "recon-num-tokens")
            run = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct")
        with gr.Column(scale=2):
            with gr.Row():
                shown_input = _view("Input, as the model sees it", "recon-input")
                output = _view("Reconstruction from the tokens", "recon-output")
            status = gr.Markdown(elem_id="recon-status")
    with gr.Row():
        grid = gr.HTML(elem_id="token-grid")
        with gr.Column():
            gr.Markdown("**Edit one token**: pick a position, give it another code id, and decode again.")
            position = gr.Slider(
                0, num_tokens - 1, value=0, step=1, label="Position", elem_id="edit-position"
            )
            code = gr.Number(
                label=f"New token id (0 to {codebook_size - 1})", precision=0, minimum=0, elem_id="edit-token"
            )
            with gr.Row():
                replace = gr.Button("Replace token", elem_id="replace-token")
                reset = gr.Button("Undo the edits", elem_id="reset-tokens")

    def show(
        page: dict[str, Any], tokens: list[int], precision_name: str, seconds: float, k: float | None = None
    ) -> tuple[Any, ...]:
        original = page["original"]
        changed = [i for i, (a, b) in enumerate(zip(tokens, original, strict=True)) if a != b]
        start = time.perf_counter()
        image = actions.decode(models, tokens, precision_name, k)
        seconds += time.perf_counter() - start
        quality = actions.image_psnr(image, page["input"])
        what = (
            f"{len(changed)} token{'s' * (len(changed) != 1)} changed"
            if changed
            else "the image's own tokens"
        )
        if k is not None and int(k) < len(tokens):
            what += f", the first {int(k)} of {len(tokens)} decoded"
        line = f"{what} · PSNR {quality:.2f} dB against the input · {seconds:.2f} s ({precision_name})"
        grid_html = actions.token_grid_html(tokens, changed, title="tokens (changed ones marked)")
        return actions.enlarge(image), grid_html, line, {**page, "tokens": tokens}

    def do_reconstruct(
        upload_path: str | None, sample_name: str | None, precision_name: str, pos: float, k: float
    ) -> tuple:
        rec = actions.reconstruct(models, _chosen_file(upload_path, sample_name, samples), precision_name, k)
        line = f"PSNR {rec.psnr:.2f} dB · {rec.seconds:.2f} s to encode and decode ({precision_name})"
        if int(k) < len(rec.tokens):
            line += f" · the first {int(k)} of {len(rec.tokens)} tokens decoded"
        notes = "".join(f"  \n{html.escape(n)}" for n in rec.notes)
        page = {"input": rec.input, "tokens": rec.tokens, "original": rec.tokens}
        grid_html = actions.token_grid_html(rec.tokens, title=f"{len(rec.tokens)} tokens")
        current = rec.tokens[int(pos)] if 0 <= int(pos) < len(rec.tokens) else None
        return actions.enlarge(rec.input), actions.enlarge(rec.image), grid_html, line + notes, page, current

    def do_replace(
        page: dict[str, Any], pos: float, new: float | None, precision_name: str, k: float
    ) -> tuple:
        if not page:
            raise TitokError("reconstruct an image first")
        tokens = actions.replace_token(page["tokens"], pos, new, codebook_size)
        return show(page, tokens, precision_name, 0.0, k)

    def do_reset(page: dict[str, Any], precision_name: str, k: float) -> tuple:
        if not page:
            raise TitokError("reconstruct an image first")
        return show(page, page["original"], precision_name, 0.0, k)

    def do_length(page: dict[str, Any], precision_name: str, k: float) -> tuple:
        if not page:
            return (gr.skip(),) * 4
        return show(page, page["tokens"], precision_name, 0.0, k)

    def current_token(page: dict[str, Any], pos: float) -> Any:
        tokens = page.get("tokens") if page else None
        return tokens[int(pos)] if tokens and 0 <= int(pos) < len(tokens) else gr.skip()

    recon_outputs = [shown_input, output, grid, status, state, code]
    run.click(
        page_errors(do_reconstruct, status),
        inputs=[upload, sample, precision, position, length],
        outputs=recon_outputs,
    )
    edit_outputs = [output, grid, status, state]
    replace.click(
        page_errors(do_replace, status),
        inputs=[state, position, code, precision, length],
        outputs=edit_outputs,
    )
    reset.click(page_errors(do_reset, status), inputs=[state, precision, length], outputs=edit_outputs)
    length.release(page_errors(do_length, status), inputs=[state, precision, length], outputs=edit_outputs)
    position.change(current_token, inputs=[state, position], outputs=code, queue=False)


def _mix_tab(models: SharedModels, samples: dict[str, Path], num_tokens: int) -> None:
    state = gr.State({})
    gr.Markdown(
        "TiTok's tokens are not image patches: each holds something of the whole image. Take the first "
        "n tokens from image A and the rest from B, or swap some positions between them."
    )
    names = list(samples)
    with gr.Row():
        with gr.Column():
            upload_a, sample_a = _image_picker("Image A", "mix-a", samples, names[0] if names else None)
        with gr.Column():
            upload_b, sample_b = _image_picker("Image B", "mix-b", samples, names[-1] if names else None)
        with gr.Column():
            precision = _precision("mix-precision")
            run = gr.Button("Tokenize both", variant="primary", elem_id="mix-tokenize")
    status = gr.Markdown(elem_id="mix-status")
    with gr.Row():
        recon_a = _view("A, reconstructed", "mix-a-output")
        recon_b = _view("B, reconstructed", "mix-b-output")
        mixed = _view("First n tokens from A, the rest from B", "mix-output")
    count = gr.Slider(
        0, num_tokens, value=num_tokens // 2, step=1, label="n (tokens from A)", elem_id="mix-n"
    )
    strip = gr.Gallery(label="n from 0 to all", columns=9, height=190, elem_id="mix-strip")
    with gr.Row():
        with gr.Column():
            positions = gr.Textbox(
                value="0-7", label="Positions to swap (e.g. 0-7, 12)", elem_id="mix-positions"
            )
            swap = gr.Button("Swap them between A and B", elem_id="mix-swap")
        swapped_a = _view("A with B's tokens there", "mix-swapped-a")
        swapped_b = _view("B with A's tokens there", "mix-swapped-b")

    def do_tokenize(
        up_a: str | None,
        name_a: str | None,
        up_b: str | None,
        name_b: str | None,
        precision_name: str,
        n: float,
    ) -> tuple:
        a = actions.reconstruct(models, _chosen_file(up_a, name_a, samples), precision_name)
        b = actions.reconstruct(models, _chosen_file(up_b, name_b, samples), precision_name)
        page = {"a": a.tokens, "b": b.tokens}
        mix = actions.decode(models, actions.first_from_a(a.tokens, b.tokens, n), precision_name)
        stops = sorted({round(i * len(a.tokens) / 8) for i in range(9)})
        strip_images = [
            (actions.decode(models, actions.first_from_a(a.tokens, b.tokens, k), precision_name), f"n = {k}")
            for k in stops
        ]
        line = f"A: PSNR {a.psnr:.2f} dB · B: PSNR {b.psnr:.2f} dB" + "".join(
            f"  \n{html.escape(n)}" for n in a.notes + b.notes
        )
        return (
            actions.enlarge(a.image),
            actions.enlarge(b.image),
            actions.enlarge(mix),
            strip_images,
            line,
            page,
        )

    def do_mix(page: dict[str, Any], n: float, precision_name: str) -> tuple:
        if not page:
            raise TitokError("tokenize both images first")
        mix = actions.decode(models, actions.first_from_a(page["a"], page["b"], n), precision_name)
        return actions.enlarge(mix), f"n = {int(n)}: tokens 0 to {int(n) - 1} from A, the rest from B"

    def do_swap(page: dict[str, Any], text: str, precision_name: str) -> tuple:
        if not page:
            raise TitokError("tokenize both images first")
        chosen = actions.parse_positions(text, len(page["a"]))
        new_a, new_b = actions.swap_positions(page["a"], page["b"], chosen)
        images = [actions.enlarge(actions.decode(models, t, precision_name)) for t in (new_a, new_b)]
        return *images, f"swapped {len(chosen)} position{'s' * (len(chosen) != 1)}"

    tokenize_outputs = [recon_a, recon_b, mixed, strip, status, state]
    run.click(
        page_errors(do_tokenize, status),
        inputs=[upload_a, sample_a, upload_b, sample_b, precision, count],
        outputs=tokenize_outputs,
    )
    count.release(page_errors(do_mix, status), inputs=[state, count, precision], outputs=[mixed, status])
    swap.click(
        page_errors(do_swap, status),
        inputs=[state, positions, precision],
        outputs=[swapped_a, swapped_b, status],
    )


def _generate_tab(models: SharedModels, num_tokens: int) -> None:
    try:
        gen = models.generator()
        config, names = gen.model.config, list(gen.class_names)
    except ModelLoadError as exc:
        gr.Markdown(error_markdown(str(exc)))
        config, names = GeneratorConfig(), []  # the fields show the library's defaults
    defaults = (
        config.num_steps,
        config.guidance_scale,
        config.guidance_schedule,
        config.randomize_temperature,
    )
    state = gr.State({})
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            label = gr.Dropdown(
                names,
                value=names[0] if names else None,
                label="Class (a name or an id)",
                allow_custom_value=True,
                elem_id="gen-class",
            )
            count = gr.Slider(1, actions.MAX_SAMPLES, value=4, step=1, label="Samples", elem_id="gen-count")
            steps = gr.Slider(
                1, actions.MAX_STEPS, value=defaults[0], step=1, label="Steps", elem_id="gen-steps"
            )
            guidance = gr.Number(value=defaults[1], minimum=0, label="Guidance scale", elem_id="gen-guidance")
            schedule = gr.Radio(
                list(GUIDANCE_SCHEDULES), value=defaults[2], label="Guidance schedule", elem_id="gen-schedule"
            )
            temperature = gr.Number(
                value=defaults[3], minimum=0, label="Temperature", elem_id="gen-temperature"
            )
            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="gen-seed")
            precision = _precision("gen-precision")
            length = _length_slider(models, num_tokens, "gen-num-tokens")
            run = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="gen-status")
            samples = gr.Gallery(
                label="Samples (click one to see its steps)", columns=4, elem_id="gen-samples"
            )
            steps_view = gr.Gallery(label="Decoding steps", columns=5, height=330, elem_id="gen-steps-view")

    def show_steps(page: dict[str, Any], sample: int, precision_name: str) -> list[tuple[Image.Image, str]]:
        frames = actions.decode_steps(models, page["steps"], page["mask_id"], sample, precision_name)
        return [(actions.enlarge(img, 128), caption) for img, caption in frames]

    def do_generate(
        class_text: str | None,
        n: float,
        num_steps: float,
        scale: float | None,
        schedule_name: str,
        temp: float | None,
        seed_value: float | None,
        precision_name: str,
        k: float,
    ) -> tuple:
        result = actions.generate(
            models,
            class_text or "",
            num_samples=n,
            num_steps=num_steps,
            guidance_scale=scale,
            guidance_schedule=schedule_name,
            temperature=temp,
            seed=0 if seed_value is None else seed_value,
            precision_name=precision_name,
            num_tokens=k,
        )
        page = {"steps": result.steps, "mask_id": result.mask_id}
        images = [
            (actions.enlarge(img, 128), f"{result.class_name} #{i}") for i, img in enumerate(result.samples)
        ]
        line = (
            f"{len(images)} × {html.escape(result.class_name)} in {result.seconds:.2f} s "
            f"({len(result.steps)} steps, {precision_name}); below: sample #0 step by step"
        )
        return images, show_steps(page, 0, precision_name), line, page

    def do_select(page: dict[str, Any], precision_name: str, evt: gr.SelectData) -> tuple:
        if not page:
            raise TitokError("generate first")
        return show_steps(page, int(evt.index), precision_name), f"sample #{evt.index} step by step"

    gen_outputs = [samples, steps_view, status, state]
    run.click(
        page_errors(do_generate, status),
        inputs=[label, count, steps, guidance, schedule, temperature, seed, precision, length],
        outputs=gen_outputs,
    )
    samples.select(page_errors(do_select, status), inputs=[state, precision], outputs=[steps_view, status])


def build_app(models: SharedModels) -> gr.Blocks:
    """The page, over ``models`` (loaded here if they are not yet). Turns Gradio's analytics off
    and has its file cache cleaned (:data:`CACHE_CLEANUP`)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by Gradio at each report
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    samples = _sample_paths()
    header, num_tokens, codebook_size = _header(models)
    with gr.Blocks(title="TiTok", analytics_enabled=False, delete_cache=CACHE_CLEANUP) as app:
        gr.Markdown(header)
        with gr.Tab("Reconstruct", elem_id="tab-reconstruct"):
            _reconstruct_tab(models, samples, num_tokens, codebook_size)
        with gr.Tab("Mix two images", elem_id="tab-mix"):
            _mix_tab(models, samples, num_tokens)
        with gr.Tab("Generate", elem_id="tab-generate"):
            _generate_tab(models, num_tokens)
    return app


def serve(models: SharedModels, host: str = "127.0.0.1", port: int = 7860) -> gr.Blocks:
    """Start serving the page on ``host:port`` in the background; ``block_thread()`` waits on it.

    Requests are queued; two of each kind may be in progress at once (model calls still take
    turns, see :meth:`SharedModels.computing`).
    """
    app = build_app(models)
    app.queue(default_concurrency_limit=2)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            ssr_mode=False,
            share=False,
            max_file_size=MAX_FILE_SIZE,
            theme=gr.themes.Default(),
            css=CSS,
            footer_links=["gradio"],
            quiet=True,
        )
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise TitokError(f"cannot serve on {host}:{port}: {exc}") from exc
    return app


__all__ = ["CACHE_CLEANUP", "CSS", "MAX_FILE_SIZE", "build_app", "error_markdown", "page_errors", "serve"]
