"""An Imagenette-shaped stand-in that the test suite makes itself (no ``../shared`` needed).

Same layout as the shared Imagenette folder: WebDataset shards ``train-0000.tar``, ... whose
samples are ``<key>.cls`` (class id as ASCII digits) then ``<key>.jpg``, plus ``classes.json``.
Images are 96 px JPEGs of smooth random colour fields with a per-class tint and a per-class
bright square, so a classifier or a tokenizer has something to learn. Made once per session.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import torch
from PIL import Image

from titok.class_names import IMAGENETTE_CLASSES

#: Images per shard and shards: enough for the recipes' 500-image holdout plus a training split.
PER_SHARD = 320
SHARDS = 2
SIZE = 96


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write (name, bytes) members to a WebDataset-style tar at ``path``; returns ``path``."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _picture(label: int, gen: torch.Generator) -> bytes:
    low = torch.rand(3, 6, 6, generator=gen)
    image = torch.nn.functional.interpolate(low[None], size=SIZE, mode="bicubic", align_corners=False)[0]
    tint = torch.tensor([(label * 37 % 10) / 10, (label * 53 % 10) / 10, (label * 71 % 10) / 10])
    image = 0.5 * image + 0.5 * tint[:, None, None]
    corner = (label % 5) * 16
    image[:, corner : corner + 24, corner : corner + 24] = 1.0
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_imagenette_like(root: Path, shards: int = SHARDS, per_shard: int = PER_SHARD) -> Path:
    """Write the stand-in under ``root`` (created); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    classes = list(IMAGENETTE_CLASSES)
    (root / "classes.json").write_text(
        json.dumps([{"id": i, "name": name} for i, name in enumerate(classes)], indent=2)
    )
    index = 0
    for shard in range(shards):
        members = []
        for _ in range(per_shard):
            label = index % len(classes)
            key = f"synthetic_{index:06d}"
            members += [(key + ".cls", str(label).encode()), (key + ".jpg", _picture(label, gen))]
            index += 1
        write_tar(root / f"train-{shard:04d}.tar", members)
    return root
