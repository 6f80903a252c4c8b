"""Sample images for demos: the bundled photographs, a WebDataset shard folder or an image folder."""

from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

from titok.errors import DataError, ImageError
from titok.images import IMAGE_EXTENSIONS, open_image
from titok.resources import bundled_samples_dir


def default_sample_data() -> Path:
    """``$TITOK_SAMPLE_DATA`` if set, else the bundled sample photographs."""
    env = os.environ.get("TITOK_SAMPLE_DATA")
    return Path(env) if env else bundled_samples_dir()


def extract_samples(source: Path, out_dir: Path, count: int) -> list[Path]:
    """Copy the first ``count`` images of ``source`` (tar shards or image files) to ``out_dir``.

    Shards are read in name order and members in stored order, so the choice is deterministic.
    Returns the written paths.
    """
    if not source.exists():
        raise DataError(f"{source}: no such sample data folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    shards = sorted(source.glob("*.tar")) if source.is_dir() else [source] if source.suffix == ".tar" else []
    for shard in shards:
        with tarfile.open(shard) as tf:
            for member in tf:
                if len(written) == count:
                    return written
                if Path(member.name).suffix.lower() in IMAGE_EXTENSIONS:
                    data = tf.extractfile(member)
                    if data is None:
                        continue
                    target = out_dir / Path(member.name).name
                    target.write_bytes(data.read())
                    written.append(target)
    if not shards and source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            if len(written) == count:
                break
            try:
                img = open_image(path)
            except ImageError as exc:  # a damaged or mislabelled file: the others still make the demo
                print(f"skipped: {exc}", file=sys.stderr)
                continue
            target = (out_dir / path.name).with_suffix(".png")
            img.save(target)
            written.append(target)
    if not written:
        raise DataError(f"{source}: holds no images (expected .tar shards or image files)")
    return written


__all__ = ["bundled_samples_dir", "default_sample_data", "extract_samples"]
