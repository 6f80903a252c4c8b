"""Training and evaluation data: sources (tar shards, image folders, lists), transforms, streaming.

``build_loader(DataConfig(path=...), rank=..., world_size=...)`` gives a resumable batched loader;
see :mod:`titok.data.stream` for ordering, splitting, holdout and damaged-data rules.
"""

from titok.data.loader import DataConfig, StreamLoader, build_dataset, build_loader, collate_samples
from titok.data.sources import FileSource, Record, ShardSource, Source, read_shard, resolve_source
from titok.data.stream import SKIP_KINDS, ImageStream, buffer_shuffle
from titok.data.transforms import ImageTransform, eval_transform, train_transform

__all__ = [
    "SKIP_KINDS",
    "DataConfig",
    "FileSource",
    "ImageStream",
    "ImageTransform",
    "Record",
    "ShardSource",
    "Source",
    "StreamLoader",
    "buffer_shuffle",
    "build_dataset",
    "build_loader",
    "collate_samples",
    "eval_transform",
    "read_shard",
    "resolve_source",
    "train_transform",
]
