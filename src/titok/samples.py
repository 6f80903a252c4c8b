"""Sample images for demos: the first images of a WebDataset shard folder or an image folder."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from PIL import Image

from titok.errors import DataError
from titok.images import IMAGE_EXTENSIONS


def default_sample_data() -> Path | None:
    """``shared/data/imagenette`` beside the project checkout or the working folder, if present."""
    env = os.environ.get("TITOK_SAMPLE_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for base in (Path.cwd(), *here.parents):
        candidate = base.parent / "shared" / "data" / "imagenette"
        if candidate.is_dir():
            return candidate
    return None


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
        for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:count]:
            target = out_dir / path.name
            with Image.open(path) as img:
                img.convert("RGB").save(target.with_suffix(".png"))
            written.append(target.with_suffix(".png"))
    if not written:
        raise DataError(f"{source}: holds no images (expected .tar shards or image files)")
    return written


__all__ = ["default_sample_data", "extract_samples"]
