"""Two CPU processes (gloo) through Accelerate: data sharding, gradient sync, both launchers, resume.

Run as a script (``torchrun --nproc_per_node 2 tests/test_training_distributed.py OUT [STEPS [STOP]]``
or the same under ``accelerate launch``) this file is its own worker: it trains a tiny VQGAN for
``STEPS`` steps (default 1; stopping with a checkpoint at ``STOP``) and saves, per rank, the sample
keys it read and its weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "imagenette"
#: The data the workers read: the test process passes its ``imagenette`` fixture down as TITOK_DATA.
DATA = Path(os.environ.get("TITOK_DATA", SHARED_DATA))
RECIPE = REPO / "src" / "titok" / "recipes" / "tiny_vqgan.yaml"
VENV_BIN = Path(sys.executable).parent
# Small and quiet: batch 2, no grids, no progress bar, the GAN on from the first step.
FAST = [
    "training.batch_size=2",
    "experiment.progress_bar=false",
    "experiment.image_every=0",
    "experiment.log_every=1",
    "data.shuffle_buffer=16",
    "losses.discriminator_start=0",
]


@pytest.fixture(autouse=True)
def _data(imagenette: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the workers (and this module's DATA) at the ``imagenette`` fixture's shards."""
    monkeypatch.setenv("TITOK_DATA", str(imagenette))
    monkeypatch.setattr(sys.modules[__name__], "DATA", imagenette)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_"))
    }
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TITOK_DATA=str(DATA))
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _worker(out: Path, steps: int = 1, stop: int | None = None) -> None:
    """One rank: train, then save the keys read and the weights reached."""
    from titok.training import load_recipe, make_task
    from titok.training.engine import Engine

    overrides = [
        *FAST,
        f"training.max_train_steps={steps}",
        "lr_scheduler.warmup_steps=0",
        f"data.train={DATA}",
    ]
    if stop is not None:
        overrides.append(f"training.stop_at_step={stop}")
    recipe = load_recipe(RECIPE, overrides, mode="vqgan")
    task = make_task(recipe)
    keys: list[str] = []
    initial: dict[str, torch.Tensor] = {}
    step = task.train_step

    def recording_step(batch, ctx):  # noqa: ANN001, ANN202 - thin test wrapper
        keys.extend(batch["key"])
        if not initial:
            initial.update({k: v.detach().clone() for k, v in ctx.unwrapped("model").state_dict().items()})
        return step(batch, ctx)

    task.train_step = recording_step  # type: ignore[method-assign]
    engine = Engine(task, output_dir=out / "run")
    engine.run()
    rank = engine.accelerator.process_index
    torch.save(
        {
            "keys": keys,
            "initial": initial,
            "world_size": engine.accelerator.num_processes,
            "model": {k: v.detach().cpu() for k, v in engine.modules["model"].state_dict().items()},
            "discriminator": {
                k: v.detach().cpu() for k, v in engine.modules["discriminator"].state_dict().items()
            },
        },
        out / f"rank{rank}.pt",
    )


def _check_ranks(out: Path, steps: int) -> None:
    """Both ranks read disjoint samples, started from and ended with bitwise identical weights."""
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    assert r0["world_size"] == r1["world_size"] == 2
    assert len(r0["keys"]) == len(r1["keys"]) == 2 * steps
    assert not set(r0["keys"]) & set(r1["keys"]), "both ranks read the same samples"
    for part in ("model", "discriminator"):
        for name, value in r0[part].items():
            assert torch.equal(value, r1[part][name]), f"{part}.{name} differs between ranks"
    changed = [k for k, v in r0["model"].items() if not torch.equal(v, r0["initial"][k])]
    assert changed, "training left the weights unchanged"
    assert all(torch.equal(r0["initial"][k], r1["initial"][k]) for k in r0["initial"]), "ranks started apart"
    from titok.training.checkpointing import load_tensors

    ckpt = out / "run" / f"checkpoint-{steps:08d}"
    saved = load_tensors(ckpt / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in r0["model"].items())
    # The two data positions are saved separately.
    assert (ckpt / "rank-0.pt").is_file() and (ckpt / "rank-1.pt").is_file()


def _torchrun(*args: str) -> list[str]:
    port = str(_free_port())
    return [
        str(VENV_BIN / "torchrun"),
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        port,
        *args,
    ]


def test_torchrun_two_processes_read_different_shards_and_stay_in_sync(tmp_path: Path) -> None:
    _run(_torchrun(str(Path(__file__).resolve()), str(tmp_path)), REPO)
    _check_ranks(tmp_path, steps=1)


def test_accelerate_launch_in_sync_then_torchrun_resume_through_the_cli_bit_exactly(tmp_path: Path) -> None:
    launch = [
        str(VENV_BIN / "accelerate"),
        "launch",
        # On a machine without GPUs "--multi_gpu" selects Accelerate's torch-elastic launcher and the
        # engine picks the CPU (gloo) backend; "--cpu" alone would start a single process (or use mpirun).
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(Path(__file__).resolve()),
        str(tmp_path),
        "3",  # max_train_steps
        "2",  # stop_at_step
    ]
    _run(launch, tmp_path)
    _check_ranks(tmp_path, steps=2)
    out = tmp_path / "run"
    meta = json.loads((out / "checkpoint-00000002" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == 2
    assert not (out / "export").exists()

    resume = _torchrun(
        "-m",
        "titok.cli_train",
        "vqgan",
        "--config",
        str(RECIPE),
        *FAST,
        "training.max_train_steps=3",
        "lr_scheduler.warmup_steps=0",
        "--output-dir",
        str(out),
        "--resume",
    )
    proc = _run(resume, tmp_path)
    assert "trained vqgan to step 3" in proc.stdout
    assert json.loads((out / "checkpoint-00000003" / "meta.json").read_text())["world_size"] == 2

    from titok.loading import load_vqgan

    vqgan = load_vqgan(out / "export")
    assert vqgan.config.codebook_size == 256
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]

    # The interrupted-and-resumed run ends bit-identical to one that ran its 3 steps straight.
    straight = tmp_path / "straight"
    _run(_torchrun(str(Path(__file__).resolve()), str(straight), "3"), REPO)
    from titok.training.checkpointing import load_tensors

    for part in ("model", "discriminator"):
        resumed = load_tensors(out / "checkpoint-00000003" / f"{part}.safetensors")
        uninterrupted = load_tensors(straight / "run" / "checkpoint-00000003" / f"{part}.safetensors")
        assert resumed.keys() == uninterrupted.keys()
        for name, value in uninterrupted.items():
            assert torch.equal(resumed[name], value), f"{part}.{name}: resumed run differs from straight run"


@pytest.mark.parametrize("hidden_tail", ["remove", "token"])
def test_two_processes_train_on_token_prefixes(tmp_path: Path, hidden_tail: str) -> None:
    """Each process draws its own prefix lengths; every parameter still gets a gradient on every
    process (DDP would stop otherwise), and the run exports a variable-length model."""
    out = tmp_path / "run"
    cmd = _torchrun(
        "-m",
        "titok.cli_train",
        "single-stage",
        "--config",
        "tiny_single_stage",
        "training.batch_size=2",
        "experiment.progress_bar=false",
        "experiment.image_every=0",
        "experiment.log_every=1",
        "data.shuffle_buffer=16",
        "losses.perceptual_loss=none",
        "losses.perceptual_weight=0",
        "losses.discriminator_start=100",
        "training.max_train_steps=2",
        "lr_scheduler.warmup_steps=0",
        "prefix.enabled=true",
        f"model.hidden_tail={hidden_tail}",
        "--output-dir",
        str(out),
    )
    proc = _run(cmd, tmp_path)
    assert "trained single_stage to step 2" in proc.stdout
    from titok import TiTok

    model = TiTok.from_pretrained(out / "export")
    assert model.config.variable_length and model.config.hidden_tail == hidden_tail
    assert (out / "checkpoint-00000002" / "rank-1.pt").is_file()


if __name__ == "__main__":
    _worker(
        Path(sys.argv[1]),
        int(sys.argv[2]) if len(sys.argv) > 2 else 1,
        int(sys.argv[3]) if len(sys.argv) > 3 else None,
    )
