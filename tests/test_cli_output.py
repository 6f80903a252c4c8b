"""What ``titok reconstruct`` shows: per-image lines never cut through a progress bar; ``--quiet``."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch

from titok import TiTok
from titok.samples import bundled_samples_dir, extract_samples


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    extract_samples(bundled_samples_dir(), folder, 6)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return TiTok.from_preset("titok-tiny-32").save_pretrained(tmp_path_factory.mktemp("m") / "tiny")


def _command(inputs: Path, model: Path, out: Path, *extra: str) -> list[str]:
    code = "import sys; from titok.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["reconstruct", str(inputs), "-o", str(out), "--model", str(model), "--batch-size", "2"]
    return [sys.executable, "-c", code, *args, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "100"}


def _run_in_terminal(argv: list[str]) -> str:
    """Run ``argv`` with stdout and stderr on one pseudo-terminal, as in an interactive shell."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # rows, columns
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=_env())
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the terminal was closed by the child's exit
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    return b"".join(chunks).decode()


def _screen(raw: str) -> list[str]:
    """The lines a terminal would show: a carriage return moves back to the start of the line."""
    lines = []
    for row in raw.replace("\r\n", "\n").split("\n"):
        shown = ""
        for piece in row.split("\r"):
            shown = piece + shown[len(piece) :]
        lines.append(shown.rstrip())
    return lines


def _image_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "PSNR" in line and "mean PSNR" not in line]


def test_per_image_lines_stay_clear_of_the_bar_on_a_terminal(
    inputs: Path, tiny_model: Path, tmp_path: Path
) -> None:
    raw = _run_in_terminal(_command(inputs, tiny_model, tmp_path / "out"))
    assert "reconstruct:" in raw and "%|" in raw  # the bar is drawn on a terminal
    lines = _screen(raw)
    per_image = _image_lines(lines)
    assert len(per_image) == 6, lines
    for line in per_image:
        assert line.startswith(str(inputs)) and line.endswith("_reconstruction.png"), line
        assert "%|" not in line and "reconstruct:" not in line, line
    # The finished bar stays once, below the per-image lines, and the summary comes last.
    assert lines.index(per_image[-1]) < next(i for i, line in enumerate(lines) if "100%|" in line)
    assert lines[-2].startswith("reconstructed 6 image(s)")


def test_a_log_gets_no_bar_debris(inputs: Path, tiny_model: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        _command(inputs, tiny_model, tmp_path / "out"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout
    assert "\r" not in proc.stdout and "%|" not in proc.stdout
    assert len(_image_lines(proc.stdout.splitlines())) == 6


def test_quiet_shows_no_bar_and_no_per_image_lines(inputs: Path, tiny_model: Path, tmp_path: Path) -> None:
    lines = _screen(_run_in_terminal(_command(inputs, tiny_model, tmp_path / "out", "--quiet")))
    assert not any("%|" in line for line in lines) and _image_lines(lines) == []
    assert any(line.startswith("reconstructed 6 image(s)") for line in lines)
    assert len(list((tmp_path / "out").glob("*.png"))) == 6
