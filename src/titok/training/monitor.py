"""What a run shows while it trains: TensorBoard scalars and image grids, ``metrics.jsonl``, a
progress bar with ETA. Only the main process writes; the others get a silent monitor.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from titok.images import tensor_to_pil


def image_grid(rows: list[torch.Tensor], pad: int = 2) -> torch.Tensor:
    """Rows of images, each (N, 3, H, W) in [0, 1], as one picture (3, R*(H+pad)+pad, N*(W+pad)+pad)."""
    n, _, h, w = rows[0].shape
    grid = torch.ones(3, len(rows) * (h + pad) + pad, n * (w + pad) + pad)
    for r, row in enumerate(rows):
        for c in range(n):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            grid[:, top : top + h, left : left + w] = row[c].detach().float().cpu().clamp(0, 1)
    return grid


def drop_lines_after(path: Path, step: int) -> None:
    """Remove the lines of ``metrics.jsonl`` logged after ``step``: a run resumed from an earlier
    checkpoint logs those steps again, and each step must appear once."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            logged = json.loads(line).get("step", 0)
        except (json.JSONDecodeError, AttributeError):
            continue  # a line cut by a crash
        if isinstance(logged, int) and logged <= step:
            kept.append(line)
    if len(kept) != len(lines):
        path.write_text("".join(f"{line}\n" for line in kept))


class Monitor:
    """TensorBoard writer, ``metrics.jsonl`` and a tqdm bar for the main process.

    Args:
        output_dir: the run folder (``logs/``, ``images/`` and ``metrics.jsonl`` go there).
        total_steps: steps of the whole run (for the ETA).
        start_step: steps already done (after a resume).
        enabled: False on non-main processes: nothing is written.
        progress_bar: show the tqdm bar.
        description: bar label.
    """

    def __init__(
        self,
        output_dir: Path,
        total_steps: int,
        start_step: int,
        enabled: bool,
        progress_bar: bool = True,
        description: str = "train",
    ) -> None:
        self.enabled = enabled
        self.output_dir = output_dir
        self.writer: Any = None
        self.bar: Any = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(output_dir / "logs"))
        self.metrics_path = output_dir / "metrics.jsonl"
        drop_lines_after(self.metrics_path, start_step)
        if progress_bar:
            # disable=None: a bar on a terminal only, not hundreds of updates in a log file.
            self.bar = tqdm(
                total=total_steps,
                initial=start_step,
                desc=description,
                dynamic_ncols=True,
                unit="step",
                disable=None,
            )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Log scalars to TensorBoard and append them to ``metrics.jsonl``."""
        if not self.enabled:
            return
        for key, value in values.items():
            if math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")

    def images(self, step: int, rows: list[torch.Tensor]) -> Path | None:
        """Add a reconstruction grid to TensorBoard and save it as ``images/step-<step>.png``."""
        if not self.enabled:
            return None
        grid = image_grid(rows)
        self.writer.add_image("reconstructions", grid, step)
        path = self.output_dir / "images" / f"step-{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tensor_to_pil(grid).save(path)
        return path

    def advance(self, postfix: dict[str, float]) -> None:
        """One step done: move the bar and show ``postfix``."""
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
