"""Wall time of ``titok reconstruct`` on 8 images at 256 px with a ``titok-l32``-shaped model.

The published weights cannot be downloaded here, so the model is ``titok-l32`` with random
weights saved once to ``runs/bench/titok-l32-random`` (speed does not depend on weight values).
Runs the real command in a subprocess, float32 then bfloat16, and reports seconds per image for
the whole command (start-up and model loading included) and for the model work alone (as the
command's own timing line says). Writes benchmarks/results/reconstruct_cli.json.

    python benchmarks/bench_reconstruct_cli.py [--images 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402
from titok import TiTok  # noqa: E402
from titok.samples import default_sample_data, extract_samples  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work = ROOT / "runs" / "bench"
    model_dir = work / "titok-l32-random"
    if not (model_dir / "config.json").is_file():
        torch.manual_seed(0)
        TiTok.from_preset("titok-l32").save_pretrained(model_dir)
    source = default_sample_data()
    if source is None:
        raise SystemExit("no sample images: the shared Imagenette data was not found")
    inputs = extract_samples(source, work / "inputs", args.images)
    titok_bin = Path(sys.executable).parent / "titok"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    rows = {}
    for dtype in ("float32", "bfloat16"):
        cmd = [str(titok_bin), "reconstruct", *map(str, inputs), "-o", str(work / f"out-{dtype}")]
        cmd += ["--model", str(model_dir), "--dtype", dtype, "--batch-size", str(args.images)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        rows[dtype] = {"command_seconds": seconds, "seconds_per_image": seconds / len(inputs)}
        print(
            f"titok reconstruct, {len(inputs)} images, {dtype}: {seconds:.1f} s ({seconds / len(inputs):.2f} s/image)"
        )
    command = "titok reconstruct IMAGES -o OUT --model runs/bench/titok-l32-random --dtype {float32,bfloat16}"
    path = write_results(
        "reconstruct_cli",
        {
            "model": "titok-l32 (random weights)",
            "image_size": 256,
            "images": len(inputs),
            "threads": args.threads,
            "command": command,
            "results": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
