"""The command line on a core install: no optional dependency at start-up, one line for a missing one.

The optional extras (``train``, ``eval``, ``demo``, ``web``) are installed in the test environment, so each
test runs Python in a subprocess whose import system refuses them, as a core install would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from titok.cli.run import EXTRAS, missing_extra_message
from titok.samples import bundled_samples_dir

#: The modules of the optional extras that the core must never need.
OPTIONAL = ("webdataset", "braceexpand", "accelerate", "scipy", "matplotlib", "tensorboard", "gradio")

_PRELUDE = textwrap.dedent(
    f"""
    import json, sys

    BLOCKED = {OPTIONAL!r}

    class RefuseOptional:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED or name.startswith("torch.utils.tensorboard"):
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, RefuseOptional())
    """
)


def _core_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` after the prelude that makes the optional dependencies unimportable."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )


def test_import_titok_and_the_cli_load_no_optional_module(tmp_path: Path) -> None:
    proc = _core_python(
        """
        import titok
        light = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        import titok.cli
        from titok.cli import main
        code = main(["--help"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        training = sorted(m for m in sys.modules if m.startswith(("titok.training", "titok.data")))
        print(json.dumps({"light": light, "code": code, "loaded": loaded, "training": training}))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result == {"light": [], "code": 0, "loaded": [], "training": []}
    assert "reconstruct" in proc.stdout and "train" in proc.stdout


def test_inference_commands_run_without_the_optional_modules(tmp_path: Path) -> None:
    sample = sorted(bundled_samples_dir().glob("*.jpg"))[0]
    proc = _core_python(
        f"""
        from titok.cli import main
        codes = [
            main(["presets"]),
            main(["info", "imagenette64"]),
            main(["tokenize", {str(sample)!r}, "-o", "tokens.npz", "--quiet"]),
            main(["reconstruct", {str(sample)!r}, "-o", "recon", "--quiet"]),
            main(["generate", "-n", "1", "-c", "0", "-o", "gen", "--steps", "2", "--quiet"]),
            main(["demo", "-o", "demo", "-n", "2", "--per-class", "1", "--quiet"]),
            main(["train", "--help"]),
        ]
        print(json.dumps(codes))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [0] * 7, proc.stderr
    assert (tmp_path / "recon" / f"{sample.stem}_reconstruction.png").is_file()
    assert (tmp_path / "demo" / "generated" / "grid.png").is_file()


def test_a_command_needing_an_extra_says_which_in_one_line(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    proc = _core_python(
        """
        from titok.cli import main
        from titok.cli_train import main as train_main
        codes = [
            main(["pretokenize", "--data", "images", "-o", "tokens", "--model", "titok-tiny-32"]),
            main(["train", "stage1", "--config", "tiny_stage1"]),
            train_main(["vqgan", "--config", "tiny_vqgan"]),
            main(["eval", "reconstruction", "--data", "images", "--model", "titok-tiny-32", "--no-fid"]),
        ]
        print(json.dumps(codes))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [2, 2, 2, 2]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 4 and "Traceback" not in proc.stderr, proc.stderr
    for line in lines:
        assert line.endswith('pip install "titok[train]"'), line


def test_the_web_command_without_gradio_names_the_web_extra(tmp_path: Path) -> None:
    proc = _core_python(
        """
        from titok.cli import main
        print(json.dumps(main(["web", "--port", "1"])))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == 2
    assert proc.stderr.strip() == (
        'error: this command needs the "web" extra (gradio is not installed): pip install "titok[web]"'
    )


@pytest.mark.parametrize(
    ("module", "extra"), [("scipy.linalg", "eval"), ("matplotlib", "demo"), ("gradio.components", "web")]
)
def test_missing_extra_message_names_the_extra(module: str, extra: str) -> None:
    message = missing_extra_message(ModuleNotFoundError(f"No module named {module!r}", name=module))
    assert message is not None and message.endswith(f'pip install "titok[{extra}]"')
    assert module.split(".")[0] in message and "\n" not in message
    assert set(EXTRAS.values()) <= {"train", "eval", "demo", "vision", "web"}


def test_a_missing_core_module_is_a_bug_with_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import titok.cli.catalog as catalog
    from titok.cli import main

    def broken(as_json: bool = False) -> None:
        raise ModuleNotFoundError("No module named 'titok_helper'", name="titok_helper")

    monkeypatch.setattr(catalog, "tokenizer_presets", lambda: broken())
    with pytest.raises(ModuleNotFoundError):
        main(["presets"])


def test_the_documented_training_module_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "titok.cli_train", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "stage1" in proc.stdout and "generator" in proc.stdout
