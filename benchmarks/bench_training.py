"""Training speed on this machine: optimizer steps/s and images/s of tiny stage 1 and stage 2.

Runs the real engine (data reading, forward, backward, AdamW, EMA, logging) on the packaged
``tiny_stage1`` and ``tiny_stage2`` recipes at 32 px on the CPU, with a randomly initialised
tiny VQGAN teacher and stage-1 model (speed does not depend on weight values). Stage 2 runs with
the discriminator on from the first step (generator + discriminator updates per step). The time
of a step is the wall time from one step's start to the next; the first ``--warmup`` steps are
dropped and the median of the rest is reported. Prints a table and writes
benchmarks/results/training.json.

    python benchmarks/bench_training.py [--data PATH] [--batch 8] [--steps 20] [--warmup 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402
from titok.loading import save_model  # noqa: E402
from titok.models.presets import tokenizer_config  # noqa: E402
from titok.models.titok import TiTok  # noqa: E402
from titok.models.vqgan import VQGAN  # noqa: E402
from titok.training import load_recipe, make_task  # noqa: E402
from titok.training.engine import Engine  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "src" / "titok" / "recipes"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette"


def make_teacher_and_stage1(folder: Path) -> tuple[Path, Path]:
    """Random tiny VQGAN (the ``tiny_vqgan`` architecture) and stage-1 TiTok exports."""
    recipe = load_recipe(RECIPES / "tiny_vqgan.yaml", ["data.train=unused"], mode="vqgan")
    vqgan_cfg = recipe.vqgan_config()
    teacher = save_model(VQGAN(vqgan_cfg), folder / "teacher", kind="vqgan", config=vqgan_cfg.to_dict())
    cfg = tokenizer_config("titok-tiny-32", decoder_head="proxy", num_proxy_codes=vqgan_cfg.codebook_size)
    stage1 = TiTok(cfg).save_pretrained(folder / "stage1")
    return teacher, stage1


def time_steps(recipe_name: str, mode: str, overrides: list[str], out: Path, total: int) -> list[float]:
    """Seconds of each optimizer step of a ``total``-step run (start of a step to the next)."""
    recipe = load_recipe(RECIPES / f"{recipe_name}.yaml", overrides, mode=mode)
    task = make_task(recipe)
    starts: list[float] = []
    step = task.train_step

    def timed_step(batch, ctx):  # noqa: ANN001, ANN202 - thin timing wrapper
        starts.append(time.perf_counter())
        return step(batch, ctx)

    task.train_step = timed_step  # type: ignore[method-assign]
    Engine(task, output_dir=out).run()
    end = time.perf_counter()  # includes the final checkpoint and export: the last step is dropped
    starts.append(end)
    return [b - a for a, b in zip(starts, starts[1:], strict=False)][: total - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("TITOK_DATA", str(DEFAULT_DATA)))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="1: steadier on a shared machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)
    total = args.warmup + args.steps + 1
    common = [
        f"data.train={args.data}",
        f"training.batch_size={args.batch}",
        f"training.max_train_steps={total}",
        "experiment.progress_bar=false",
        "experiment.image_every=0",
        "experiment.log_every=10",
        f"experiment.save_every={total}",
    ]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        teacher, stage1 = make_teacher_and_stage1(folder)
        runs = {
            "stage1": ("tiny_stage1", "stage1", [f"teacher={teacher}"]),
            "stage2": (
                "tiny_stage2",
                "stage2",
                [f"teacher={teacher}", f"init_from={stage1}", "losses.discriminator_start=0"],
            ),
        }
        for name, (recipe, mode, extra) in runs.items():
            times = time_steps(recipe, mode, [*common, *extra], folder / f"run-{name}", total)[args.warmup :]
            median = statistics.median(times)
            rows[name] = {
                "recipe": recipe,
                "steps_per_second": 1.0 / median,
                "images_per_second": args.batch / median,
                "median_step_s": median,
                "step_times_s": times,
            }
            print(
                f"tiny {name}: {1.0 / median:6.2f} steps/s, {args.batch / median:7.1f} images/s "
                f"(median of {len(times)} steps, batch {args.batch}, {args.threads} threads)"
            )
    path = write_results(
        "training",
        {
            "image_size": 32,
            "batch": args.batch,
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "notes": "stage 2 with the discriminator on; perceptual term only if its weights are present",
            # Other work on the machine slows every step; the 1-minute load average tells.
            "load_average_1min": os.getloadavg()[0],
            "results": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
