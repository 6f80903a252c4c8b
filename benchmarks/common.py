"""Timing helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(fn: Callable[[], object], warmup: int = 1, runs: int = 3) -> tuple[float, list[float]]:
    """Run ``fn`` ``warmup`` times untimed, then ``runs`` times; median wall time and all times."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def machine() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def write_results(name: str, payload: dict, path: Path | None = None) -> Path:
    """Write ``payload`` with machine facts and a timestamp to ``path`` (default
    ``benchmarks/results/<name>.json``)."""
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out a matplotlib figure, save it at 100 dpi to ``path`` (folders made) and say where."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return path
