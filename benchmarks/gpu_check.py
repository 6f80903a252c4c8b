"""The prepared check of the GPU path: tests, CUDA-against-CPU agreement and the paper's speeds.

One command for a lent GPU machine (``bash benchmarks/gpu_check.sh`` sets it up there), written to
finish in under 8 minutes on one GPU. Sections, each timed and recorded on its own (a failing
section is written down with its error and the next one runs):

* ``tests``: the suite's tests marked ``device`` (every model forward/backward in float32 and
  bfloat16, the sampler, a few steps of each training mode in bfloat16 mixed precision, exact
  resume) with ``TITOK_TEST_DEVICE`` set to the device, in a pytest subprocess;
* ``agreement``: one set of random ``titok-l32`` weights (and its generator's) on the CPU in
  float32 and on the device, in float32 with TF32 off and again in bfloat16: token agreement of
  ``encode``, max/mean abs difference of ``decode`` (the same tokens on both) and of the
  generator's logits (the same input);
* ``training`` (:mod:`gpu_speed`): stage-1 training images/s through the real engine
  (Accelerate, the recipe's batch and mixed precision) on a synthetic shard, SDPA on and off;
* ``speed`` (:mod:`gpu_speed`): generation samples/s at the published settings (8 steps,
  guidance 4.5 linear) at the largest batch that fits, against the paper's figure; encode and
  decode images/s in bfloat16; each with ``torch.compile`` off and on and SDPA's fused kernels on
  and off (the math kernel), the compiled variants last.

Weights are random (speed does not depend on them; agreement on random weights sees more
near-ties between codes than trained weights would). Data are synthetic: nothing beside the
repository is needed.

``--tiny`` runs the same code at the smallest sizes (``titok-tiny-32``, the ``tiny`` generator,
``tiny_stage1``): the test suite runs it on the CPU so that this script cannot rot.

Usage::

    python benchmarks/gpu_check.py [--device cuda] [--tiny] [--sections tests agreement training speed]
        [--budget-s 450] [--compile-backend inductor] [--out PATH]

Writes ``benchmarks/results/gpu_<device name>.json`` (or ``--out``) after every section.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402
from gpu_setup import FULL, ROOT, TINY, Check, build_models, device_facts, device_name, smooth_images  # noqa: E402
from gpu_speed import generation_and_coding_speed, training_speed  # noqa: E402

#: In the order they run: training before speed, whose compiled variants (last) may take what
#: budget is left.
SECTIONS = ("tests", "agreement", "training", "speed")


# ------------------------------------------------------------------------------------------ tests


def run_tests(check: Check, select: str | None = None) -> dict[str, Any]:
    """The suite's ``device`` tests on the check's device, in a pytest subprocess."""
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {
            "status": "skipped",
            "reason": "pytest is not installed (gpu_check.sh installs carried wheels)",
        }
    command = [sys.executable, "-m", "pytest", "-m", "device", "-q", "-p", "no:cacheprovider", "tests"]
    if select:
        command += ["-k", select]
    env = {
        **os.environ,
        "TITOK_TEST_DEVICE": str(check.device),
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT),
    }
    timeout = max(30, min(check.sizes.tests_timeout_s, int(check.seconds_left() - 60)))
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or b"")[-3000:]
        return {"status": "failed", "reason": f"pytest ran past {timeout} s", "output_tail": str(tail)}
    output = done.stdout + done.stderr
    counts = {
        kind: int(n)
        for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", output)
    }
    return {
        "status": "ok" if done.returncode == 0 else "failed",
        "returncode": done.returncode,
        "counts": counts,
        "output_tail": output[-3000:],
    }


# -------------------------------------------------------------------------------------- agreement


@contextlib.contextmanager
def _tf32_off(device: torch.device) -> Iterator[None]:
    """Full float32 matrix products and convolutions on CUDA for the duration (no-op elsewhere)."""
    if device.type != "cuda":
        yield
        return
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def agreement(check: Check) -> dict[str, Any]:
    """CUDA against CPU float32 on the same weights and inputs: tokens, pixels and logits."""
    tokenizer, generator = build_models(check.sizes)
    cfg = tokenizer.config
    images = smooth_images(check.sizes.agreement_batch, cfg.image_size, seed=1)
    rng = torch.Generator().manual_seed(2)
    labels = torch.randint(0, generator.config.num_classes, (len(images),), generator=rng)
    masked = torch.randint(0, cfg.codebook_size, (len(images), cfg.num_latent_tokens), generator=rng)
    masked[:, ::2] = generator.mask_token_id  # half the positions masked, as mid-sampling

    with torch.inference_mode():
        ref_tokens = tokenizer.encode(images, dtype=torch.float32)
        ref_pixels = tokenizer.decode(ref_tokens, dtype=torch.float32)
        ref_logits = generator(masked, labels).float()
    tokenizer.to(check.device)
    generator.to(check.device)
    found: dict[str, Any] = {"batch": len(images), "tokenizer": check.sizes.tokenizer}
    for name, dtype in (("float32_tf32_off", torch.float32), ("bfloat16", torch.bfloat16)):
        with _tf32_off(check.device), torch.inference_mode():
            tokens = tokenizer.encode(images, dtype=dtype).cpu()
            pixels = tokenizer.decode(ref_tokens.to(check.device), dtype=dtype).float().cpu()
            with torch.autocast(check.device.type, dtype=dtype, enabled=dtype != torch.float32):
                logits = generator(masked.to(check.device), labels.to(check.device)).float().cpu()
        found[name] = {
            "token_agreement": (tokens == ref_tokens).float().mean().item(),
            "pixels_max_abs_diff": (pixels - ref_pixels).abs().max().item(),
            "pixels_mean_abs_diff": (pixels - ref_pixels).abs().mean().item(),
            "logits_max_abs_diff": (logits - ref_logits).abs().max().item(),
            "logits_scale": ref_logits.abs().max().item(),
        }
    return {"status": "ok", **found}


# ------------------------------------------------------------------------------------------ main


def run_section(check: Check, name: str, fn: Callable[[Check], dict[str, Any]]) -> None:
    """Run one section, record its figures (or its error) and how long it took; save the file."""
    if check.seconds_left() < 20:
        check.results["sections"][name] = {"status": "skipped", "reason": "time budget spent"}
    else:
        start = time.monotonic()
        try:
            found = fn(check)
        except Exception as exc:  # a failing section is recorded, the next one still runs
            found = {
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:],
            }
        found["seconds"] = round(time.monotonic() - start, 1)
        check.results["sections"][name] = found
    print(f"[gpu_check] {name}: {check.results['sections'][name]['status']}", flush=True)
    check.save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the smallest sizes (the test suite's CPU run)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--budget-s", type=float, default=450.0, help="sections not started by then are skipped"
    )
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend ('eager': no codegen)"
    )
    parser.add_argument("--tests-select", default=None, help="pytest -k expression for the tests section")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu-check", help="scratch folder")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device} but torch sees no CUDA device", file=sys.stderr)
        return 2
    out = args.out or RESULTS / f"gpu_{device_name(device)}.json"
    check = Check(
        device=device,
        sizes=TINY if args.tiny else FULL,
        deadline=time.monotonic() + args.budget_s,
        out=out,
        compile_backend=args.compile_backend,
        work=args.work,
    )
    check.results = {"tiny": args.tiny, "facts": device_facts(device), "sections": {}}
    parts: dict[str, Callable[[Check], dict[str, Any]]] = {
        "tests": lambda c: run_tests(c, args.tests_select),
        "agreement": agreement,
        "speed": generation_and_coding_speed,
        "training": training_speed,
    }
    for name in SECTIONS:
        if name in args.sections:
            run_section(check, name, parts[name])
    print(f"wrote {out}")
    failed = [n for n, s in check.results["sections"].items() if s["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
