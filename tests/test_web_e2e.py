"""``titok web`` in a real browser: the server on a free local port, driven in headless Chromium.

Chromium is the system's (Debian's ``chromium``, installed by ``.ci/run``), driven by Playwright
without any browser download. The test is skipped, with the reason, where either is missing.
It checks what a person would: upload a sample, reconstruct, see the image and the token grid,
edit one token and see the image change; a file that is not an image is an error line on the
page and the server goes on serving; two pages reconstructing at the same time both get their
result; a class generates, with its decoding steps. A screenshot is left in the test's folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from titok.models.generator import Generator
from titok.samples import bundled_samples_dir

CHROMIUM = Path(os.environ.get("TITOK_TEST_CHROMIUM", "/usr/bin/chromium"))
#: Headless Chromium as root, on a machine without a network: no sandbox, and no background calls.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.slow


def _requirements() -> str | None:
    """Why the test cannot run here, or None."""
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    for module, extra in (("gradio", "web"), ("playwright", "dev")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_serving(url: str, proc: subprocess.Popen[str], log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"titok web exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"titok web did not answer within {timeout:.0f} s:\n{log.read_text()}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``titok web`` on a free port of 127.0.0.1; yields its URL and its log.

    The models are tiny and freshly initialised with fixed seeds: the tokenizer ``titok-tiny-64``
    (32 tokens, 1024 codes) and a generator over its tokens, saved in the test's folder. What the
    test sees does not hang on the shipped models or on how well they are trained (a random
    decoder answers to every token).
    """
    reason = _requirements()
    if reason is not None:
        pytest.skip(reason)
    torch.manual_seed(0)
    Generator.from_preset(
        "tiny", codebook_size=1024, seq_len=32, num_classes=3, class_names=["cat", "dog", "fish"]
    ).save_pretrained(tmp_path / "generator")
    port = _free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "PYTHONUNBUFFERED": "1",
    }
    code = f"from titok.cli import main; raise SystemExit(main(['web', '--port', '{port}', '--model', 'titok-tiny-64', '--generator', 'generator']))"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=tmp_path,
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_serving(url, proc, log)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _upload(page: Any, box: str, path: Path) -> None:
    """Put ``path`` in the upload box ``box`` and wait until the page shows it as uploaded."""
    clear = page.locator(f'{box} button[aria-label="Clear"]')
    if clear.count():
        clear.click()  # an uploaded file replaces the box's file input until it is cleared
    page.set_input_files(f"{box} input[type=file]", str(path))
    page.wait_for_selector(f'{box} [aria-label="{path.name}"]', timeout=TIMEOUT_MS)


def _reconstruct(page: Any, path: Path) -> None:
    _upload(page, "#recon-upload", path)
    page.click("#reconstruct")


def _wait_for_reconstruction(page: Any) -> None:
    page.wait_for_selector("#recon-output img", timeout=TIMEOUT_MS)
    page.wait_for_function("document.querySelectorAll('#token-grid td').length === 32", timeout=TIMEOUT_MS)


def test_reconstruct_and_edit_a_token_in_a_browser(server: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url, log = server
    sample = bundled_samples_dir() / "astronaut.jpg"
    other = bundled_samples_dir() / "coffee.jpg"
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are notes, not pixels")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, timeout=TIMEOUT_MS)

            # A file that is not an image: one line on the page, no traceback anywhere.
            _reconstruct(page, not_an_image)
            error = page.locator("#recon-status .titok-error")
            error.wait_for(timeout=TIMEOUT_MS)
            assert "notes.png: not an image file" in error.inner_text()

            # The server goes on serving: a sample reconstructs, its 32 tokens appear as a grid.
            _reconstruct(page, sample)
            _wait_for_reconstruction(page)
            assert page.locator("#recon-input img").count() == 1
            assert "PSNR" in page.inner_text("#recon-status")
            before = page.get_attribute("#recon-output img", "src")
            first = int(page.get_attribute('#token-grid td[data-pos="0"]', "data-token") or -1)
            assert 0 <= first < 1024

            # Replace the token at position 0: the grid marks it and the image changes.
            new = (first + 512) % 1024
            page.fill("#edit-token input", str(new))
            page.click("#replace-token")
            page.wait_for_selector(
                f'#token-grid td.changed[data-pos="0"][data-token="{new}"]', timeout=TIMEOUT_MS
            )
            page.wait_for_function(
                "src => document.querySelector('#recon-output img').src !== src",
                arg=before,
                timeout=TIMEOUT_MS,
            )
            assert "1 token changed" in page.inner_text("#recon-status")
            page.screenshot(path=str(tmp_path / "web.png"), full_page=True)

            # Two pages at the same time: both get their reconstruction.
            pages = [browser.new_page(), browser.new_page()]
            for p in pages:
                p.goto(url, timeout=TIMEOUT_MS)
            for p, path in zip(pages, (sample, other), strict=True):
                _upload(p, "#recon-upload", path)
            for p in pages:
                p.click("#reconstruct")
            for p in pages:
                _wait_for_reconstruction(p)
                assert "PSNR" in p.inner_text("#recon-status")
            grids = [p.inner_html("#token-grid") for p in pages]
            assert grids[0] != grids[1]

            # Generate: samples of the first class, and the steps of sample #0 as its tokens fill in.
            page.get_by_role("tab", name="Generate").click()
            page.click("#generate")
            page.wait_for_function(
                "document.querySelectorAll('#gen-steps-view img').length >= 2", timeout=TIMEOUT_MS
            )
            assert page.locator("#gen-samples img").count() == 4
            assert "step by step" in page.inner_text("#gen-status")
        finally:
            browser.close()

    assert (tmp_path / "web.png").stat().st_size > 10_000
    server_log = log.read_text()
    assert "Traceback" not in server_log, server_log
    assert f"serving the demo on {url.rstrip('/')}" in server_log


def test_the_browser_test_finds_its_browser_in_ci() -> None:
    """CI installs Chromium: there the browser test must run, not be skipped."""
    if os.environ.get("CI") != "true":
        pytest.skip("only checked in CI (CI=true)")
    assert _requirements() is None, _requirements()
    assert shutil.which("chromium") is not None
