"""Building a batched loader over an image stream whose position can be saved and restored exactly.

Typical training use::

    loader = build_loader(DataConfig(path="/data/train-{0000..0009}.tar", image_size=64),
                          rank=accelerator.process_index, world_size=accelerator.num_processes)
    for batch in loader:             # endless: never ends
        batch["image"]               # (B, 3, S, S) float in [0, 1]
        batch["label"]               # (B,) int64, -1 for unlabeled sources
        batch["key"]                 # list of B str
        ...
        save({"data": loader.state_dict(), ...})

and on restart ``loader.load_state_dict(saved["data"])`` before iterating again. The state is
per rank (each rank has its own positions): save one per rank. A state saved by another rank is
accepted and turned into positions from its batch count, which is exact when no image failed to
decode (a warning says so).

Batches come from the DataLoader workers in turn (batch ``k`` from worker ``k mod W``), each
batch from one worker, so the batch sequence is a function of ``(seed, rank, world_size, W,
batch_size)``; resuming requires the same values. In finite mode a worker's last batch may be
short, and a resume is exact until the first worker runs out.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader

from titok.data.stream import ImageStream
from titok.data.transforms import ImageTransform
from titok.errors import ConfigError, DataError

logger = logging.getLogger("titok.data")

_STATE_FORMAT = "titok.data.stream/1"
_HAS_IN_ORDER = "in_order" in inspect.signature(DataLoader).parameters


@dataclass
class DataConfig:
    """Where the images are and how to stream them (see :class:`~titok.data.stream.ImageStream`).

    Attributes:
        path: data spec (tar shard pattern, shard folder, ImageFolder tree, image list file,
            image folder) or a list of them.
        image_size: side S of the (3, S, S) output images.
        batch_size: samples per batch, per rank.
        num_workers: DataLoader worker processes per rank (``0``: read in the main process).
        seed: seed of shuffling and augmentation.
        endless: repeat reshuffled epochs forever (training) or make one ordered pass.
        augment: random crop + horizontal flip (else center crop).
        fast_jpeg: decode JPEGs at reduced scale when >= 2x larger than ``image_size``.
        shuffle_buffer: per-reader shuffle buffer (tar shards, endless mode).
        holdout: samples held out for validation, chosen by a hash of key and ``holdout_seed``.
        split: ``"train"`` (without the held-out samples) or ``"val"`` (only them).
        holdout_seed: seed of the holdout choice.
        max_samples: keep the first N samples of the source order.
        class_subset: keep only these labels.
        require_labels: skip tar samples without ``.cls`` (else label -1).
        pin_memory: pin batches for faster host-to-GPU copies.
    """

    path: str | list[str]
    image_size: int = 256
    batch_size: int = 32
    num_workers: int = 0
    seed: int = 0
    endless: bool = True
    augment: bool = True
    fast_jpeg: bool = True
    shuffle_buffer: int = 1000
    holdout: int = 0
    split: str = "train"
    holdout_seed: int = 0
    max_samples: int | None = None
    class_subset: list[int] | None = None
    require_labels: bool = True
    pin_memory: bool = False


class StreamMeta(NamedTuple):
    """Bookkeeping of one batch: logical worker, its consumed locations, its skip counts so far."""

    worker: int
    position: int
    skipped: dict[str, int]


def collate_samples(samples: list[dict[str, Any]]) -> tuple[dict[str, Any], StreamMeta]:
    """Samples of one worker -> (``{"image": (B, 3, S, S), "label": (B,), "key": [B]}``, meta)."""
    batch = {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "key": [s["key"] for s in samples],
    }
    last = samples[-1]
    return batch, StreamMeta(last["_worker"], last["_position"], last["_skipped"])


def _init_worker(worker_id: int) -> None:
    torch.set_num_threads(1)


class StreamLoader:
    """Batches of an :class:`ImageStream` with ``state_dict()`` / ``load_state_dict()``.

    Every ``for batch in loader`` builds a fresh ``torch.utils.data.DataLoader`` that continues
    from the current position (after a finished finite pass: from the start).

    Args:
        dataset: the stream to batch.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (``0``: main process).
        pin_memory: pin batch tensors.
    """

    def __init__(self, dataset: ImageStream, batch_size: int, num_workers: int = 0, pin_memory: bool = False):
        if batch_size <= 0 or num_workers < 0:
            raise ConfigError(
                f"data: batch_size must be > 0 and num_workers >= 0, got {batch_size} and {num_workers}"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self._batches = 0
        self._positions = [0] * self.num_readers
        self._worker_skipped: dict[int, dict[str, int]] = {}
        self._skipped_base: Counter[str] = Counter()

    @property
    def num_readers(self) -> int:
        """Readers of this rank: the number of workers, or 1 without workers."""
        return max(self.num_workers, 1)

    @property
    def batches_consumed(self) -> int:
        """Batches handed out since the start of the stream (or of the current finite pass)."""
        return self._batches

    @property
    def skipped(self) -> Counter[str]:
        """Skipped damaged samples per kind, summed over workers, up to the last batch handed out."""
        total = Counter(self._skipped_base)
        for counts in self._worker_skipped.values():
            total.update(counts)
        return +total

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._skipped_base = self.skipped
        self._worker_skipped = {}
        self.dataset.skipped.clear()
        self.dataset.set_resume(self._positions, self._batches % self.num_readers)
        extra: dict[str, Any] = {"worker_init_fn": _init_worker} if self.num_workers else {}
        if _HAS_IN_ORDER:  # torch >= 2.6; earlier versions always deliver batches in order
            extra["in_order"] = True
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            pin_memory=self.pin_memory,
            **extra,
        )
        for batch, meta in loader:
            self._batches += 1
            self._positions[meta.worker] = meta.position
            self._worker_skipped[meta.worker] = meta.skipped
            yield batch
        self._skipped_base = self.skipped
        self._worker_skipped = {}
        self._batches = 0
        self._positions = [0] * self.num_readers

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position of the stream (per rank)."""
        return {
            "format": _STATE_FORMAT,
            "batches": self._batches,
            "positions": list(self._positions),
            "skipped": dict(self.skipped),
            "rank": self.dataset.rank,
            "world_size": self.dataset.world_size,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "seed": self.dataset.seed,
            "endless": self.dataset.endless,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the next iteration resumes exactly there.

        Raises :class:`DataError` if the state was saved with a different number of workers, batch
        size, world size, seed or mode (the order would differ).
        """
        if state.get("format") != _STATE_FORMAT:
            raise DataError(
                f"data stream state: expected format {_STATE_FORMAT!r}, got {state.get('format')!r}"
            )
        ours = self.state_dict()
        changed = [
            f"{name} {state[name]} -> {ours[name]}"
            for name in ("num_workers", "batch_size", "world_size", "seed", "endless")
            if state[name] != ours[name]
        ]
        if changed:
            raise DataError(f"cannot resume the data stream exactly, settings changed: {', '.join(changed)}")
        batches = int(state["batches"])
        if state["rank"] == self.dataset.rank:
            positions = [int(p) for p in state["positions"]]
        else:
            logger.warning(
                "data stream state of rank %s restored on rank %s: positions recomputed from the batch "
                "count (exact unless images failed to decode)",
                state["rank"],
                self.dataset.rank,
            )
            readers = self.num_readers
            positions = [
                (batches // readers + (1 if w < batches % readers else 0)) * self.batch_size
                for w in range(readers)
            ]
        self._batches = batches
        self._positions = positions
        self._worker_skipped = {}
        self._skipped_base = Counter(state.get("skipped", {}))


def build_dataset(config: DataConfig, *, rank: int = 0, world_size: int = 1) -> ImageStream:
    """The :class:`ImageStream` a config describes, for one rank."""
    transform = ImageTransform(config.image_size, augment=config.augment, fast_jpeg=config.fast_jpeg)
    return ImageStream(
        config.path,
        transform,
        seed=config.seed,
        endless=config.endless,
        shuffle_buffer=config.shuffle_buffer,
        rank=rank,
        world_size=world_size,
        holdout=config.holdout,
        split=config.split,
        holdout_seed=config.holdout_seed,
        max_samples=config.max_samples,
        class_subset=config.class_subset,
        require_labels=config.require_labels,
    )


def build_loader(config: DataConfig, *, rank: int = 0, world_size: int = 1) -> StreamLoader:
    """A resumable batched loader for one rank (``rank``/``world_size`` from e.g. Accelerate)."""
    return StreamLoader(
        build_dataset(config, rank=rank, world_size=world_size),
        config.batch_size,
        num_workers=config.num_workers,
        pin_memory=config.pin_memory,
    )
