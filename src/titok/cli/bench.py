"""``titok bench``: encode, decode and generate throughput of a tokenizer (and a generator).

::

    titok bench --model M [--generator G] [--batch-size 16] [--runs 5] [--dtype bfloat16] [--json-out F]

Each operation is called ``--warmup`` times untimed, then ``--runs`` times; the median is reported
in images/s (see :func:`titok.evaluation.throughput.benchmark`).
"""

from __future__ import annotations

from typing import Annotated

import torch
import typer

from titok.cli.options import (
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    GeneratorOpt,
    GeneratorPresetOpt,
    JsonOutOpt,
    ModelOpt,
    NumStepsOpt,
    PresetOpt,
    TeacherOpt,
    load_teacher,
    parse_device,
    parse_dtype,
    resolve_generator,
    resolve_model,
    sampling_settings,
    write_json,
)


def bench(
    model: ModelOpt = None,
    preset: PresetOpt = None,
    generator: GeneratorOpt = None,
    generator_preset: GeneratorPresetOpt = None,
    teacher: TeacherOpt = None,
    batch_size: BatchOpt = 16,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls per operation.")] = 2,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed calls per operation (median taken).")] = 5,
    num_steps: NumStepsOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    json_out: JsonOutOpt = None,
) -> None:
    """Encode, decode (and generate) throughput in images/s: warm-up, then the median of several runs."""
    from titok.evaluation.throughput import benchmark

    dev, dt = parse_device(device), parse_dtype(dtype)
    tok, desc = resolve_model(model, preset, dev)
    gen, gen_desc = resolve_generator(generator, generator_preset, tok, dev) if generator else (None, None)
    typer.echo(f"model: {desc}" + (f"; generator: {gen_desc}" if gen_desc else ""), err=True)
    timings = benchmark(
        tok,
        gen,
        batch_size=batch_size,
        dtype=dt,
        warmup=warmup,
        runs=runs,
        teacher=load_teacher(teacher, dev),
        sampling=sampling_settings(num_steps, None),
    )
    width = max(len(op) for op in timings)
    dtype_name = str(dt).removeprefix("torch.")
    typer.echo(
        f"{'operation':<{max(width, 9)}}  images/s  ms/batch (batch {batch_size}, {dev}, {dtype_name})"
    )
    for op, timing in timings.items():
        typer.echo(
            f"{op:<{max(width, 9)}}  {timing.images_per_second:8.1f}  {timing.median_seconds * 1e3:8.1f}"
        )
    if json_out is not None:
        payload = {
            "command": "bench",
            "model": desc,
            "generator": gen_desc,
            "device": str(dev),
            "dtype": dtype_name,
            "batch_size": batch_size,
            "warmup": warmup,
            "runs": runs,
            "threads": torch.get_num_threads(),
            "images_per_second": {op: t.images_per_second for op, t in timings.items()},
            "seconds": {op: t.seconds for op, t in timings.items()},
        }
        write_json(payload, json_out)


__all__ = ["bench"]
