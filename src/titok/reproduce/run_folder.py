"""A reproduction run folder: its ``state.json`` (budget, finished stages, wall times), stage
folders, results and the tokenizers it trained (see :mod:`titok.reproduce.pipeline`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from titok.errors import ConfigError, DataError
from titok.evaluation.reconstruction import DataSplit, Tokenizer
from titok.reproduce.budget import Budget
from titok.reproduce.parallel import Job, run_parallel
from titok.reproduce.stages import TokenizerStage, find_tokenizer, tokenizer_catalog

logger = logging.getLogger("titok.reproduce")

#: The shared Imagenette shards, relative to the folder a command runs in (the repository root
#: of a checkout with ``shared/`` beside it): the packaged recipes' default as well
#: (``${TITOK_DATA:-../shared/data/imagenette}``).
SHARED_DATA = Path("..", "shared", "data", "imagenette")


def default_data() -> str:
    """The training shards when no ``--data`` is given: ``$TITOK_DATA`` if set, else
    :data:`SHARED_DATA` if it exists (as an absolute path, recorded in ``state.json``).

    Raises:
        DataError: neither is there.
    """
    env = os.environ.get("TITOK_DATA")
    if env:
        return env
    shared = os.path.abspath(SHARED_DATA)
    if Path(shared).is_dir():
        return shared
    raise DataError(f"no Imagenette shards at {shared}: set $TITOK_DATA or pass --data")


@dataclass
class Run:
    """One reproduction run folder.

    Args:
        output: the run folder.
        budget: the compute budget.
        data: Imagenette training shards (labelled).
        echo: where progress lines go.
        latent_centering: train the TiTok stages with latent centering (a recipe variant,
            recorded; a folder made without it is refused, and the other way round).
    """

    output: Path
    budget: Budget
    data: str
    echo: Callable[[str], None] = print
    latent_centering: bool = False

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.state_path = self.output / "state.json"
        if self.state_path.is_file():
            self.state = json.loads(self.state_path.read_text())
            recorded = self.state.get("budget", {})
            if recorded.get("name") != self.budget.name:
                raise ConfigError(
                    f"{self.output}: holds a run with budget {recorded.get('name')!r}, "
                    f"not {self.budget.name!r}; use another output folder"
                )
            current = json.loads(json.dumps(self.budget.to_dict()))  # tuples as lists, like the file
            changed = sorted(k for k in recorded if k in current and recorded[k] != current[k])
            if changed:
                diffs = ", ".join(f"{k}: {recorded[k]!r} -> {current[k]!r}" for k in changed)
                raise ConfigError(
                    f"{self.output}: budget {self.budget.name!r} has changed since this run began ({diffs}); "
                    "use another output folder"
                )
            if recorded != current:  # fields added since: record them
                self.state["budget"] = current
                self.save()
            variant = self.state.get("latent_centering", False)
            if variant != self.latent_centering:
                raise ConfigError(
                    f"{self.output}: holds a run {'with' if variant else 'without'} latent centering, "
                    f"asked {'with' if self.latent_centering else 'without'}; use another output folder"
                )
        else:
            self.state = {
                "budget": self.budget.to_dict(),
                "data": self.data,
                "latent_centering": self.latent_centering,
                "stages": {},
            }
            self.save()

    # ------------------------------------------------------------------ bookkeeping
    def save(self) -> None:
        """Write ``state.json`` (atomically: a crash leaves the old or the new file)."""
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        os.replace(tmp, self.state_path)

    def redo(self, stages: list[str]) -> None:
        """Forget ``stages`` (and delete their folders) so that the next run does them again."""
        for name in stages:
            if name not in self.state["stages"]:
                known = ", ".join(self.state["stages"]) or "none yet"
                raise ConfigError(f"--redo {name}: no such stage in {self.output} (recorded: {known})")
        for name in stages:
            del self.state["stages"][name]
            folder = self.path(name)
            if folder.is_dir():
                shutil.rmtree(folder)
        self.save()

    def done(self, stage: str) -> bool:
        return self.state["stages"].get(stage, {}).get("done", False)

    def stage(self, name: str, fn: Callable[[], dict[str, Any] | None]) -> None:
        """Run ``fn`` as stage ``name`` unless it is done; record its wall time (summed over tries)."""
        if self.done(name):
            self.echo(f"[skip] {name} (done in {self.state['stages'][name]['seconds']:.0f} s)")
            return
        self.echo(f"[run ] {name}")
        entry = self.state["stages"].setdefault(name, {"seconds": 0.0, "done": False})
        start = time.perf_counter()
        try:
            extra = fn() or {}
        except BaseException:
            entry.update(
                seconds=entry["seconds"] + time.perf_counter() - start, threads=torch.get_num_threads()
            )
            self.save()
            raise
        self.record(name, extra, time.perf_counter() - start, torch.get_num_threads())

    def record(self, name: str, extra: dict[str, Any], seconds: float, threads: int) -> None:
        """Mark stage ``name`` done after ``seconds`` more wall time on ``threads`` threads (here or a worker's)."""
        entry = self.state["stages"].setdefault(name, {"seconds": 0.0, "done": False})
        entry["seconds"] += seconds
        entry.update(threads=threads, done=True, **extra)
        self.save()
        self.echo(f"[done] {name} in {entry['seconds']:.0f} s")

    def stages(self, jobs: Sequence[tuple[str, Job]], workers: int = 1) -> None:
        """Run the independent stages ``jobs`` not done yet: in order here, or on ``workers`` processes.

        Jobs for workers must be picklable (module-level functions and their arguments). A stage
        interrupted in a worker resumes from its checkpoints like any other.
        """
        todo = []
        for name, job in jobs:
            if self.done(name):
                self.stage(name, job)  # echoes the skip
            else:
                todo.append((name, job))
        if workers <= 1 or len(todo) <= 1:
            for name, job in todo:
                self.stage(name, job)
            return
        for name, _ in todo:
            self.echo(f"[run ] {name} (worker process)")
            self.state["stages"].setdefault(name, {"seconds": 0.0, "done": False})
        self.save()
        run_parallel(todo, min(workers, len(todo)), self.record)

    def path(self, *parts: str) -> Path:
        return self.output.joinpath(*parts)

    def write_json(self, name: str, data: Any) -> None:
        path = self.path("results", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads(self.path("results", name).read_text())

    # ------------------------------------------------------------------ splits
    def val_split(self, max_images: int | None = None) -> DataSplit:
        return DataSplit(self.data, "val", self.budget.holdout, 0, max_images)

    def train_split(self, max_images: int | None) -> DataSplit:
        limit = self.budget.max_train_images
        if max_images is not None and limit is not None:
            max_images = min(max_images, limit)
        return DataSplit(self.data, "train", self.budget.holdout, 0, max_images or limit)

    # ------------------------------------------------------------------ tokenizers
    def tokenizers(self) -> tuple[TokenizerStage, ...]:
        """Every tokenizer of the run's budget, in pipeline order (:func:`tokenizer_catalog`)."""
        return tokenizer_catalog(self.budget)

    def tokenizer(self, name: str) -> TokenizerStage:
        """The run's tokenizer recorded as ``name`` (in ``state.json`` or a results file)."""
        return find_tokenizer(self.tokenizers(), name)

    def load_tokenizer(self, tokenizer: TokenizerStage | str) -> Tokenizer:
        """A trained tokenizer of the run (or the one recorded as that name), in eval mode."""
        if isinstance(tokenizer, str):
            tokenizer = self.tokenizer(tokenizer)
        return tokenizer.load(self.output)

    def feature_network(self):
        from titok.models.classifier import load_classifier

        return load_classifier(self.path("classifier")).eval()
