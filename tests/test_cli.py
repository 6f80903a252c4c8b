"""The ``titok`` command line end to end, with bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from titok import TiTok
from titok.cli import main
from titok.samples import bundled_samples_dir, extract_samples


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[Path]:
    """Four real photographs (256 px JPEGs) from the samples bundled with the package."""
    return extract_samples(bundled_samples_dir(), tmp_path_factory.mktemp("samples"), 4)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return TiTok.from_preset("titok-tiny-32").save_pretrained(tmp_path_factory.mktemp("m") / "tiny")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_presets_lists_every_preset_with_counts(capsys) -> None:
    code, out, _ = run(capsys, "presets", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["titok-l32"]["tokens"] == 32 and rows["titok-l32"]["codebook"] == "4096"
    assert rows["titok-s128"]["parameters"] == 83674639
    assert rows["titok-ll32-vae"]["codebook"] == "VAE c16"
    code, out, _ = run(capsys, "presets")
    assert "titok-bl64-vq8k" in out


def test_info_describes_a_checkpoint(capsys, tiny_model: Path) -> None:
    code, out, _ = run(capsys, "info", str(tiny_model), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["config"]["num_latent_tokens"] == 16
    assert info["parameters"] == sum(info["parameters_by_part"].values())


def test_tokenize_writes_npz(capsys, tmp_path: Path, samples: list[Path], tiny_model: Path) -> None:
    out = tmp_path / "tok.npz"
    code, stdout, _ = run(capsys, "tokenize", *map(str, samples), "-o", str(out), "--model", str(tiny_model))
    assert code == 0, stdout
    data = np.load(out)
    assert data["tokens"].shape == (4, 16) and data["tokens"].dtype == np.int32
    assert list(data["paths"]) == [str(p) for p in samples]
    model = TiTok.from_pretrained(tiny_model)
    assert np.array_equal(model.encode(samples).numpy(), data["tokens"])


def test_reconstruct_writes_pairs_and_psnr(
    capsys, tmp_path: Path, samples: list[Path], tiny_model: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for p in samples:
        shutil.copy(p, folder / p.name)
    code, stdout, err = run(
        capsys,
        "reconstruct",
        str(folder),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tiny_model),
        "--batch-size",
        "3",
        "--dtype",
        "bfloat16",
    )
    assert code == 0, err
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert len(pngs) == 4
    assert Image.open(pngs[0]).size == (64, 32)  # original | reconstruction
    assert stdout.count("PSNR") == 4 + 1 and "mean PSNR" in stdout


def test_bad_inputs_are_reported_and_the_rest_processed(
    capsys, tmp_path: Path, samples: list[Path], tiny_model: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = samples[0].read_bytes()
    (folder / "a_good.jpg").write_bytes(good)
    (folder / "b_truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "c_text.png").write_text("this is not an image\n")
    Image.new("L", (50, 40), 128).save(folder / "d_grey.png")
    Image.new("RGBA", (33, 90), (10, 200, 30, 100)).save(folder / "e_rgba.png")
    Image.new("RGB", (17, 301), (250, 0, 0)).save(folder / "f_odd.jpg")
    code, stdout, err = run(
        capsys, "reconstruct", str(folder), "-o", str(tmp_path / "out"), "--model", str(tiny_model)
    )
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, err
    assert any("b_truncated.jpg" in e for e in errors) and any("c_text.png" in e for e in errors)
    assert "Traceback" not in err
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == [f"{n}_reconstruction.png" for n in ("a_good", "d_grey", "e_rgba", "f_odd")]


def test_empty_folder_and_missing_path_are_one_line_errors(capsys, tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "reconstruct", str(tmp_path / "empty"), "--model", str(tiny_model))
    assert code == 2 and err.strip().count("\n") == 0 and "holds no images" in err
    code, _, err = run(capsys, "tokenize", str(tmp_path / "nope.jpg"), "--model", str(tiny_model))
    assert code == 2 and "no such file" in err


def test_checkpoint_missing_a_tensor_is_a_one_line_error(
    capsys, tmp_path: Path, samples: list[Path], tiny_model: Path
) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    state = load_file(str(broken / "model.safetensors"))
    del state["decoder.mask_token"]
    save_file(state, str(broken / "model.safetensors"))
    code, _, err = run(capsys, "reconstruct", str(samples[0]), "--model", str(broken))
    assert code == 2
    assert "missing 1: decoder.mask_token" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0


def test_bad_options_are_clear(capsys, samples: list[Path]) -> None:
    code, _, err = run(capsys, "reconstruct", str(samples[0]), "--dtype", "float8")
    assert code == 2 and "--dtype" in err
    code, _, err = run(capsys, "reconstruct", str(samples[0]), "--model", "titok-l33")
    assert code == 2 and "titok-l33" in err


def test_bundled_samples_are_small_licensed_photographs() -> None:
    folder = bundled_samples_dir()
    images = sorted(p for p in folder.iterdir() if p.suffix == ".jpg")
    assert len(images) >= 8
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2**20
    sources = (folder / "SOURCES.md").read_text()
    for p in images:
        assert f"`{p.name}`" in sources, p.name
        with Image.open(p) as img:
            assert img.mode == "RGB" and min(img.size) >= 64


def test_demo_uses_the_bundled_samples_by_default(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TITOK_SAMPLE_DATA", raising=False)
    code, stdout, err = run(capsys, "demo", "-o", str(tmp_path / "demo"), "-n", "3", "--per-class", "0")
    assert code == 0, err
    bundled = sorted(p.stem for p in bundled_samples_dir().glob("*.jpg"))[:3]
    assert sorted(p.stem for p in (tmp_path / "demo" / "inputs").iterdir()) == bundled
    assert len(list((tmp_path / "demo" / "reconstructions").glob("*.png"))) == 3
    assert f"from {bundled_samples_dir()}" in stdout and "mean PSNR" in stdout


def test_demo_data_option_and_environment_override_the_bundled_samples(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mine, env = tmp_path / "mine", tmp_path / "env"
    for folder, color in ((mine, (200, 30, 30)), (env, (30, 30, 200))):
        folder.mkdir()
        for i in range(2):
            Image.new("RGB", (80, 70), color).save(folder / f"{folder.name}{i}.png")
    monkeypatch.setenv("TITOK_SAMPLE_DATA", str(env))
    code, _, err = run(capsys, "demo", "-o", str(tmp_path / "a"), "--per-class", "0")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "a" / "inputs").iterdir()) == ["env0.png", "env1.png"]
    code, _, err = run(capsys, "demo", "-o", str(tmp_path / "b"), "--data", str(mine), "--per-class", "0")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "b" / "inputs").iterdir()) == ["mine0.png", "mine1.png"]


def test_a_failed_demo_leaves_no_output_folder(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo"
    code, _, err = run(capsys, "demo", "-o", str(out), "-n", "2", "-m", "no-such-model", "--per-class", "0")
    assert code == 2 and "no-such-model" in err
    assert not out.exists(), "the copied inputs of a failed demo are removed"
    if not torch.cuda.is_available():  # the demo takes --device like the commands it runs
        code, _, err = run(capsys, "demo", "-o", str(out), "-n", "2", "--device", "cuda", "--per-class", "0")
        assert code == 2 and "CUDA was asked for but is not available" in err and not out.exists()


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["generate", "-n", "0"], "--num"),
        (["reconstruct", "x.png", "--bogus"], "No such option: --bogus"),
        (["nosuchcommand"], "No such command"),
        (["train", "single-stage"], "--config"),
        (["info"], "checkpoint"),
        (["reconstruct", "x.png", "--num-tokens", "zero"], "--num-tokens"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv: list[str], wanted: str) -> None:
    """Whichever click typer raises its usage errors from (its own bundled copy since typer 0.2x)."""
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and wanted in lines[0], err
    assert "--help" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["reconstruct", "IMG", "-o", "FILE"],
        ["generate", "-n", "1", "-o", "FILE"],
        ["demo", "-o", "FILE", "-n", "1", "--per-class", "0"],
    ],
)
def test_an_output_that_is_a_file_is_one_line(
    capsys, tmp_path: Path, samples: list[Path], argv: list[str]
) -> None:
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    argv = [str(samples[0]) if a == "IMG" else str(target) if a == "FILE" else a for a in argv]
    code, _, err = run(capsys, *argv)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "taken.txt" in errors[0] and "Traceback" not in err, err
    assert target.read_text() == "keep me"


def test_a_failed_reconstruct_leaves_no_empty_output_folder(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "new" / "out"
    code, _, err = run(capsys, "reconstruct", str(bad), "-o", str(out))
    assert code == 2 and "none of the input images could be read" in err
    assert not (tmp_path / "new").exists()
