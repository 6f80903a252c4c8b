"""``benchmarks/gpu_check.py`` at its tiny sizes on the CPU: every section runs and records its
figures, so the check prepared for a lent GPU cannot rot unseen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ONE_DEVICE_TEST = "test_every_model_runs_forward_and_backward_on_the_device and classifier and float32"


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        str(SCRIPT),
        "--tiny",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--work",
        str(tmp_path / "work"),
        *args,
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.is_file(), done.stdout + done.stderr
    return done, json.loads(out.read_text())


@pytest.mark.slow
def test_every_section_of_the_gpu_check_runs_at_tiny_sizes(tmp_path: Path) -> None:
    done, found = _run(tmp_path, "--compile-backend", "eager", "--tests-select", ONE_DEVICE_TEST)
    assert done.returncode == 0, done.stdout + done.stderr
    sections = found["sections"]
    assert [(name, s["status"]) for name, s in sections.items()] == [
        ("tests", "ok"),
        ("agreement", "ok"),
        ("training", "ok"),
        ("speed", "ok"),
    ]
    assert found["facts"]["name"] == "cpu" and found["tiny"] is True
    assert sections["tests"]["counts"]["passed"] == 1  # the one selected test
    # CPU against CPU: the same computations, so float32 agrees exactly; bfloat16 only closely.
    exact, low = sections["agreement"]["float32_tf32_off"], sections["agreement"]["bfloat16"]
    assert exact["token_agreement"] == 1.0 and exact["pixels_max_abs_diff"] == 0.0
    assert 0.0 < low["pixels_max_abs_diff"] < 0.1 and low["token_agreement"] > 0.5
    speed = sections["speed"]
    assert set(speed["generation"]) == {
        "float32",
        "bfloat16",
        "bfloat16_sdpa_math",
        "float32_compiled",
        "bfloat16_compiled",
    }
    for variant in (*speed["generation"].values(), *speed["coding"].values()):
        assert variant["status"] == "ok" and variant["batch"] == 4, variant
    assert all(v["samples_per_second"] > 0 for v in speed["generation"].values())
    assert speed["paper_samples_per_second"] is None  # the paper has no figure for the tiny sizes
    training = sections["training"]
    assert training["batch_per_device"] == 8 and training["recipe"] == "tiny_stage1"
    assert training["sdpa_fused"]["images_per_second"] > 0 and training["sdpa_math"]["images_per_second"] > 0


def test_a_failing_section_is_recorded_and_the_next_still_runs(tmp_path: Path) -> None:
    done, found = _run(
        tmp_path, "--sections", "tests", "agreement", "--tests-select", "no_test_has_this_name"
    )
    assert done.returncode == 1
    sections = found["sections"]
    assert sections["tests"]["status"] == "failed" and sections["tests"]["returncode"] == 5  # none collected
    assert sections["agreement"]["status"] == "ok"
    assert set(sections) == {"tests", "agreement"}
