"""The image stream: an iterable dataset over a data source, split across ranks and workers.

Readers. With ``world_size`` ranks and ``W`` DataLoader workers per rank (``W = 1`` without
workers) there are ``n = world_size * W`` readers; worker ``w`` of rank ``r`` is reader
``r * W + w``. In each epoch every sample goes to exactly one reader:

* tar shards: the epoch's shard order is cut round-robin, reader ``i`` reads shards ``i, i + n, ...``;
  with fewer shards than readers, every reader walks all shard headers and keeps the samples whose
  running index is ``i`` modulo ``n`` (it reads the image bytes of its own samples only);
* image files: the epoch's file order is cut round-robin the same way.

Order. Endless mode (training) repeats epochs forever; epoch ``e`` permutes the shard (or file)
order with a generator seeded by ``(seed, e)`` and passes each reader's samples through a shuffle
buffer seeded by ``(seed, e, reader, n)``. The buffer holds only sample locations (key, label,
byte offset), never decoded images, so it can be large. Augmentation randomness is seeded by
``(seed, e, key)``. Everything is thus a function of ``(seed, rank, world_size, W)``. Finite mode
(evaluation, pretokenization) is one pass in source order (shards by name, samples in tar order),
no shuffling.

Resume. Each reader's stream is a fixed sequence of sample locations; a reader that has consumed
``p`` of them (counting images that failed to decode) can restart at ``p``: whole epochs are
skipped from per-shard sample counts, the rest of the current epoch by replaying locations
without reading images. Every sample carries its reader's logical worker index (``_worker``) and
that count (``_position``) so that :class:`titok.data.loader.StreamLoader` can record it;
:meth:`ImageStream.set_resume` sets the restart points.

Holdout. ``holdout=N`` sets aside the ``N`` samples whose keys have the smallest
``blake2b(f"{holdout_seed}:{key}")`` hash among all samples (after ``class_subset``): the choice
depends only on the keys and the seed, not on shard order, ranks or workers, and is identical
across runs. ``split="train"`` streams the rest, ``split="val"`` the held-out samples. For tar
shards this reads every shard's headers and labels once when the dataset is built.

``max_samples=N`` keeps the first ``N`` samples of the source order (after ``class_subset`` and the
holdout split); endless mode then repeats those ``N``. Labels are kept as in the source (not
renumbered by ``class_subset``).

Damaged data. An undecodable or cut-short image (``bad_image``), a missing ``.cls``
(``missing_label``), a ``.cls`` that is not a class id (``bad_label``), a sample without an image
(``missing_image``) and an unreadable tar (``bad_shard``) are skipped, counted in
:attr:`ImageStream.skipped` and logged once per kind and process on the ``titok.data`` logger.
Counters live in the process that reads (each DataLoader worker has its own);
:class:`~titok.data.loader.StreamLoader` sums the workers' counts as reported with each batch. In
endless mode a damaged sample is counted again every epoch it is met; after a resume, tar-level
problems (all kinds but ``bad_image``) of the epoch resumed in are not counted again.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch.utils.data import IterableDataset, get_worker_info

from titok.data.sources import FileSource, Record, ShardSource, Source, SpecLike, read_shard, resolve_source
from titok.data.transforms import ImageTransform
from titok.errors import ConfigError, DataError

logger = logging.getLogger("titok.data")

#: Kinds of skipped samples, the keys of :attr:`ImageStream.skipped`.
SKIP_KINDS = ("bad_image", "missing_label", "bad_label", "missing_image", "bad_shard")

T = TypeVar("T")


class ImageStream(IterableDataset):
    """Iterable dataset of ``{"image": (3, S, S) float in [0, 1], "label": int, "key": str}`` samples.

    Each sample also holds the bookkeeping entries ``_worker``, ``_position`` and ``_skipped``
    (see the module doc) that :class:`~titok.data.loader.StreamLoader` uses and removes.

    Args:
        source: a data spec (see :mod:`titok.data.sources`) or an already resolved source.
        transform: decoding and preprocessing (:func:`~titok.data.transforms.train_transform` or
            :func:`~titok.data.transforms.eval_transform`).
        seed: seed of the shard/file order, the shuffle buffer and augmentation.
        endless: repeat reshuffled epochs forever (training) instead of one ordered pass.
        shuffle_buffer: size of the per-reader sample shuffle buffer (tar shards, endless mode);
            ``0`` or ``1`` disables it.
        rank, world_size: this process's rank among the distributed processes.
        holdout: number of samples held out for validation (``0``: none).
        split: ``"train"`` (all but the held-out samples) or ``"val"`` (the held-out samples).
        holdout_seed: seed of the holdout choice.
        max_samples: keep only the first ``max_samples`` samples of the source order.
        class_subset: keep only samples whose label is in this set.
        require_labels: tar samples without ``.cls`` are skipped (``True``) or get label ``-1``.
    """

    def __init__(
        self,
        source: SpecLike | Source,
        transform: ImageTransform,
        *,
        seed: int = 0,
        endless: bool = True,
        shuffle_buffer: int = 1000,
        rank: int = 0,
        world_size: int = 1,
        holdout: int = 0,
        split: str = "train",
        holdout_seed: int = 0,
        max_samples: int | None = None,
        class_subset: Iterable[int] | None = None,
        require_labels: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ConfigError(f"data: rank must be in [0, world_size={world_size}), got {rank}")
        if split not in ("train", "val"):
            raise ConfigError(f"data.split: expected 'train' or 'val', got {split!r}")
        if split == "val" and holdout <= 0:
            raise ConfigError("data.split='val' needs data.holdout > 0 (the number of held-out samples)")
        if holdout < 0 or (max_samples is not None and max_samples <= 0) or shuffle_buffer < 0:
            raise ConfigError(
                f"data: holdout, shuffle_buffer must be >= 0 and max_samples > 0, got holdout={holdout}, "
                f"shuffle_buffer={shuffle_buffer}, max_samples={max_samples}"
            )
        self.source = source if isinstance(source, ShardSource | FileSource) else resolve_source(source)
        self.transform = transform
        self.seed = seed
        self.endless = endless
        self.shuffle_buffer = shuffle_buffer
        self.rank = rank
        self.world_size = world_size
        self.holdout = holdout
        self.split = split
        self.holdout_seed = holdout_seed
        self.max_samples = max_samples
        self.class_subset = frozenset(class_subset) if class_subset is not None else None
        self.require_labels = require_labels
        #: Keys of the held-out samples (empty without holdout).
        self.holdout_keys: frozenset[str] = frozenset()
        #: Skipped samples per kind, counted in this process.
        self.skipped: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._positions: tuple[int, ...] = ()
        self._worker_offset = 0
        self._counts: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._shards: tuple[str, ...] = ()
        self._file_ids: tuple[int, ...] = ()
        if isinstance(self.source, ShardSource):
            self._plan_shards(self.source)
        else:
            self._plan_files(self.source)

    # ------------------------------------------------------------------ planning

    def _plan_files(self, src: FileSource) -> None:
        ids = [i for i in range(len(src.files)) if self._class_ok(src.labels[i])]
        if self.holdout:
            self.holdout_keys = _pick_holdout(
                [src.keys[i] for i in ids], self.holdout, self.holdout_seed, src.spec
            )
        ids = [i for i in ids if self._split_ok(src.keys[i])]
        if self.max_samples is not None:
            ids = ids[: self.max_samples]
        if not ids:
            raise DataError(f"{src.spec}: no samples left after class_subset / holdout filtering")
        self._file_ids = tuple(ids)

    def _plan_shards(self, src: ShardSource) -> None:
        shards = list(src.shards)
        if self.holdout:
            keys = {
                p: [r.key for r in read_shard(p, self.require_labels).records if self._class_ok(r.label)]
                for p in shards
            }
            self.holdout_keys = _pick_holdout(
                [k for ks in keys.values() for k in ks], self.holdout, self.holdout_seed, src.spec
            )
            if self.split == "val":
                shards = [p for p in shards if any(k in self.holdout_keys for k in keys[p])]
        if self.max_samples is not None:
            kept: list[str] = []
            total = 0
            for path in shards:
                if total >= self.max_samples:
                    break
                n = self._count(path)
                take = min(n, self.max_samples - total)
                if take:
                    kept.append(path)
                    total += take
                if take < n:
                    self._limits[path] = take
                    self._counts[path] = take
            shards = kept
        if not shards:
            raise DataError(f"{src.spec}: no samples left after class_subset / holdout filtering")
        self._shards = tuple(shards)

    def _class_ok(self, label: int) -> bool:
        return self.class_subset is None or label in self.class_subset

    def _split_ok(self, key: str) -> bool:
        return not self.holdout or (key in self.holdout_keys) == (self.split == "val")

    # ------------------------------------------------------------------ public helpers

    def count_samples(self) -> int:
        """Samples in one epoch over all ranks (reads shard headers once; damaged samples excluded)."""
        if isinstance(self.source, FileSource):
            return len(self._file_ids)
        return sum(self._count(p) for p in self._shards)

    def set_resume(self, positions: Sequence[int], worker_offset: int = 0) -> None:
        """Restart points of the next iteration.

        Args:
            positions: ``positions[w]``: sample locations already consumed by logical worker ``w``.
            worker_offset: DataLoader worker ``i`` plays logical worker ``(i + worker_offset) % W``,
                so that a restarted loader, whose round-robin starts at worker 0, continues with the
                worker whose batch was due next.
        """
        self._positions = tuple(int(p) for p in positions)
        self._worker_offset = int(worker_offset)

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        num_workers = info.num_workers if info is not None else 1
        worker = ((info.id if info is not None else 0) + self._worker_offset) % num_workers
        slot, n_slots = self.rank * num_workers + worker, self.world_size * num_workers
        start = self._positions[worker] if worker < len(self._positions) else 0
        last_good_epoch: int | None = None
        for position, epoch, record in self._located(slot, n_slots, start):
            if last_good_epoch is None:
                last_good_epoch = epoch
            image = self._load(record, epoch)
            if image is None:
                if self.endless and epoch - last_good_epoch > 2:
                    raise DataError(
                        f"{self.source.spec}: no decodable image in two whole epochs (reader {slot})"
                    )
                continue
            last_good_epoch = epoch
            yield {
                "image": image,
                "label": record.label,
                "key": record.key,
                "_worker": worker,
                "_position": position,
                "_skipped": {kind: self.skipped[kind] for kind in SKIP_KINDS},
            }

    def _located(self, slot: int, n_slots: int, skip: int) -> Iterator[tuple[int, int, Record]]:
        """``(locations consumed including this one, epoch, record)`` of one reader, from ``skip`` on."""
        position = 0
        for epoch in itertools.count():
            if skip > 0:
                n = self._epoch_count(epoch, slot, n_slots)
                if n == 0 and self.endless:
                    raise self._empty_reader(slot, n_slots)
                if skip >= n:
                    skip -= n
                    position += n
                    if not self.endless:
                        return
                    continue
            seen = 0
            for record in self._epoch_records(epoch, slot, n_slots, report=skip == 0):
                seen += 1
                position += 1
                if skip > 0:
                    skip -= 1
                    continue
                yield position, epoch, record
            if not self.endless:
                return
            if seen == 0:
                raise self._empty_reader(slot, n_slots)

    def _empty_reader(self, slot: int, n_slots: int) -> DataError:
        return DataError(
            f"{self.source.spec}: reader {slot} of {n_slots} (rank {self.rank} of {self.world_size}) gets no "
            f"samples; use fewer DataLoader workers or more data"
        )

    def _epoch_records(self, epoch: int, slot: int, n_slots: int, report: bool) -> Iterator[Record]:
        src = self.source
        if isinstance(src, FileSource):
            ids = list(self._file_ids)
            if self.endless:
                random.Random(f"titok.data/files/{self.seed}/{epoch}").shuffle(ids)
            for i in ids[slot::n_slots]:
                yield Record(src.keys[i], src.labels[i], src.files[i], -1, -1)
            return
        order = self._shard_order(epoch)
        if len(order) >= n_slots:
            records: Iterator[Record] = itertools.chain.from_iterable(
                self._shard_records(p, report) for p in order[slot::n_slots]
            )
        else:
            records = self._strided(order, slot, n_slots, report)
        if self.endless and self.shuffle_buffer > 1:
            rng = random.Random(f"titok.data/buffer/{self.seed}/{epoch}/{slot}/{n_slots}")
            records = buffer_shuffle(records, self.shuffle_buffer, rng)
        yield from records

    def _strided(self, order: list[str], slot: int, n_slots: int, report: bool) -> Iterator[Record]:
        """Samples ``slot, slot + n_slots, ...`` of all shards read in ``order``."""
        index = 0
        for j, path in enumerate(order):
            for record in self._shard_records(path, report and j % n_slots == slot):
                if index % n_slots == slot:
                    yield record
                index += 1

    def _shard_order(self, epoch: int) -> list[str]:
        order = list(self._shards)
        if self.endless:
            random.Random(f"titok.data/shards/{self.seed}/{epoch}").shuffle(order)
        return order

    def _shard_records(self, path: str, report: bool) -> list[Record]:
        index = read_shard(path, self.require_labels)
        if report:
            for kind, key, detail in index.problems:
                self._skip(kind, key, detail)
        records = [r for r in index.records if self._class_ok(r.label) and self._split_ok(r.key)]
        if path in self._limits:
            records = records[: self._limits[path]]
        self._counts[path] = len(records)
        return records

    def _count(self, path: str) -> int:
        if path not in self._counts:
            self._shard_records(path, report=False)
        return self._counts[path]

    def _epoch_count(self, epoch: int, slot: int, n_slots: int) -> int:
        if isinstance(self.source, FileSource):
            return _share(len(self._file_ids), slot, n_slots)
        order = self._shard_order(epoch)
        if len(order) >= n_slots:
            return sum(self._count(p) for p in order[slot::n_slots])
        return _share(sum(self._count(p) for p in order), slot, n_slots)

    def _load(self, record: Record, epoch: int) -> torch.Tensor | None:
        """Decode and preprocess one sample; ``None`` (counted as ``bad_image``) if it cannot be read."""
        try:
            img = self.transform.decode(_read_bytes(record))
        except Exception as exc:  # decoders raise many types on damaged data; all mean "unusable"
            self._skip("bad_image", record.key, f"{record.path}: {exc}")
            return None
        rng = (
            random.Random(f"titok.data/augment/{self.seed}/{epoch}/{record.key}")
            if self.transform.augment
            else None
        )
        return self.transform(img, rng)

    def _skip(self, kind: str, key: str, detail: str) -> None:
        self.skipped[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning(
                "skipping %r (%s): %s; further %s cases are skipped and counted silently",
                key,
                kind,
                detail,
                kind,
            )


def buffer_shuffle(items: Iterable[T], size: int, rng: random.Random) -> Iterator[T]:
    """Shuffle a stream through a buffer of ``size`` items (each output drawn uniformly from the buffer)."""
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


def _share(total: int, slot: int, n_slots: int) -> int:
    """How many of ``range(total)`` are ``slot`` modulo ``n_slots``."""
    return total // n_slots + (1 if slot < total % n_slots else 0)


def _key_hash(key: str, seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "big")


def _pick_holdout(keys: list[str], n: int, seed: int, spec: str) -> frozenset[str]:
    if n >= len(keys):
        raise DataError(f"{spec}: holdout={n} needs more samples than the {len(keys)} available")
    return frozenset(heapq.nsmallest(n, keys, key=lambda k: (_key_hash(k, seed), k)))


def _read_bytes(record: Record) -> bytes:
    with open(record.path, "rb") as handle:
        if record.offset < 0:
            return handle.read()
        handle.seek(record.offset)
        data = handle.read(record.size)
    if len(data) != record.size:
        raise OSError(f"image data cut short ({len(data)} of {record.size} bytes)")
    return data
