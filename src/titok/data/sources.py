"""Resolving a data spec into tar shards or image files, and reading tar shards.

A *data spec* is one of:

* a WebDataset shard pattern with braces and/or globs, e.g. ``/data/train-{0000..0009}.tar`` or
  ``/data/train-*.tar`` (every path a brace pattern names must exist);
* a single ``.tar`` file, or a folder holding ``*.tar`` files (its shards, in name order);
* an ImageFolder tree ``root/<class>/<image>``: labels are the index of the class folder in the
  sorted list of (non-hidden) sub-folders of ``root``;
* a folder of images without class folders (searched recursively; label ``-1``);
* a text file listing one image per line, ``path`` or ``path<TAB>label`` (relative paths are taken
  from the list's folder; blank lines and lines starting with ``#`` are ignored; label ``-1`` when
  absent);
* a list of specs of the same kind (shards or files), concatenated in the given order.

A spec that names nothing raises :class:`~titok.errors.DataError` naming the path.

Tar shards follow the WebDataset layout: consecutive members sharing a *key* (the member name up
to the first dot of its file name) form one sample, e.g. ``<key>.cls`` (the class id in ASCII)
and ``<key>.jpg``.
"""

from __future__ import annotations

import glob
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from braceexpand import braceexpand

from titok.errors import DataError
from titok.images import IMAGE_EXTENSIONS

SpecLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

#: Member suffixes of a tar sample taken as its image, in order of preference.
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "ppm")
#: Member suffix of a tar sample holding its class id.
LABEL_SUFFIX = "cls"
_GLOB_CHARS = ("*", "?", "[")


@dataclass(frozen=True)
class ShardSource:
    """WebDataset tar shards, in reading order."""

    shards: tuple[str, ...]
    spec: str


@dataclass(frozen=True)
class FileSource:
    """Image files with their labels (``-1``: unlabeled) and keys (stable sample names)."""

    files: tuple[str, ...]
    labels: tuple[int, ...]
    keys: tuple[str, ...]
    spec: str
    classes: tuple[str, ...] | None = None


Source = ShardSource | FileSource


class Record(NamedTuple):
    """One sample before decoding: where its image bytes are and its label.

    ``offset`` is the byte offset of the image inside ``path`` (a tar shard) with ``size`` bytes;
    ``offset == -1`` means the whole file ``path`` is the image.
    """

    key: str
    label: int
    path: str
    offset: int
    size: int


@dataclass
class ShardIndex:
    """The usable samples of one shard and the problems met while reading it.

    ``problems`` holds ``(kind, key, detail)`` with kind one of ``missing_label``, ``bad_label``,
    ``missing_image`` or ``bad_shard``.
    """

    records: list[Record] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)


def resolve_source(spec: SpecLike) -> Source:
    """Turn a data spec (see the module doc) into a :class:`ShardSource` or :class:`FileSource`."""
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        return _merge([resolve_source(item) for item in spec], spec)
    text = os.fspath(spec)
    paths = _expand(text)
    if len(paths) == 1 and paths[0].is_dir():
        return _resolve_dir(paths[0], text)
    dirs = [p for p in paths if p.is_dir()]
    if dirs:
        raise DataError(
            f"{text}: pattern matches folders ({dirs[0]}); give the folder itself or a file pattern"
        )
    tars = [p for p in paths if p.suffix.lower() == ".tar"]
    images = [p for p in paths if p.suffix.lower() in IMAGE_EXTENSIONS]
    if len(tars) == len(paths):
        return ShardSource(tuple(str(p) for p in tars), text)
    if len(images) == len(paths):
        keys = tuple(str(p) for p in images)
        return FileSource(keys, (-1,) * len(keys), keys, text)
    if len(paths) == 1:
        return _read_file_list(paths[0], text)
    raise DataError(f"{text}: matches a mix of tar shards, images and other files; expected one kind")


def _expand(text: str) -> list[Path]:
    """Expand braces and globs into existing paths, in pattern order (globs sorted)."""
    patterns = list(braceexpand(text)) if "{" in text else [text]
    found: list[Path] = []
    missing: list[str] = []
    for pattern in patterns:
        if Path(pattern).exists():
            found.append(Path(pattern))
        elif any(c in pattern for c in _GLOB_CHARS):
            matches = sorted(glob.glob(pattern))
            if not matches:
                missing.append(pattern)
            found.extend(Path(m) for m in matches)
        else:
            missing.append(pattern)
    if len(patterns) == 1 and missing:
        glob_like = any(c in patterns[0] for c in _GLOB_CHARS)
        raise DataError(f"{text}: {'pattern matches no files' if glob_like else 'no such file or folder'}")
    if missing:
        raise DataError(
            f"{text}: {len(missing)} of {len(patterns)} paths do not exist (first missing: {missing[0]})"
        )
    return found


def _resolve_dir(root: Path, spec: str) -> Source:
    entries = sorted(root.iterdir())
    tars = [p for p in entries if p.is_file() and p.suffix.lower() == ".tar"]
    if tars:
        return ShardSource(tuple(str(p) for p in tars), spec)
    top_images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    class_dirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    if top_images or not class_dirs:
        return _files_under(root, spec)
    files: list[str] = []
    labels: list[int] = []
    keys: list[str] = []
    for label, class_dir in enumerate(class_dirs):
        for path in _images_below(class_dir):
            files.append(str(path))
            labels.append(label)
            keys.append(path.relative_to(root).as_posix())
    if not files:
        raise DataError(f"{root}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return FileSource(tuple(files), tuple(labels), tuple(keys), spec, tuple(d.name for d in class_dirs))


def _files_under(root: Path, spec: str) -> FileSource:
    images = _images_below(root)
    if not images:
        raise DataError(f"{root}: folder holds no tar shards and no images ({', '.join(IMAGE_EXTENSIONS)})")
    keys = tuple(p.relative_to(root).as_posix() for p in images)
    return FileSource(tuple(str(p) for p in images), (-1,) * len(images), keys, spec)


def _images_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _read_file_list(list_path: Path, spec: str) -> FileSource:
    """Parse a text list of ``path`` or ``path<TAB>label`` lines."""
    try:
        text = list_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{list_path}: not a tar shard, image or UTF-8 text list of images") from exc
    files: list[str] = []
    labels: list[int] = []
    keys: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, label = line.strip(), -1
        if "\t" in line:
            name, label_text = (part.strip() for part in line.rsplit("\t", 1))
            try:
                label = int(label_text)
            except ValueError:
                raise DataError(
                    f"{list_path}:{lineno}: label {label_text!r} is not an integer (expected path<TAB>label)"
                ) from None
            if label < 0:
                raise DataError(f"{list_path}:{lineno}: label {label} is negative")
        path = Path(name) if Path(name).is_absolute() else list_path.parent / name
        files.append(str(path))
        labels.append(label)
        keys.append(name)
    if not files:
        raise DataError(f"{list_path}: image list is empty")
    return FileSource(tuple(files), tuple(labels), tuple(keys), spec)


def _merge(parts: list[Source], spec: SpecLike) -> Source:
    if not parts:
        raise DataError("empty list of data specs")
    text = " + ".join(os.fspath(s) for s in spec)  # type: ignore[union-attr]
    if all(isinstance(p, ShardSource) for p in parts):
        return ShardSource(tuple(s for p in parts for s in p.shards), text)  # type: ignore[union-attr]
    if all(isinstance(p, FileSource) for p in parts):
        files = [p for p in parts if isinstance(p, FileSource)]
        return FileSource(
            tuple(f for p in files for f in p.files),
            tuple(label for p in files for label in p.labels),
            tuple(k for p in files for k in p.keys),
            text,
        )
    raise DataError(f"{text}: mixes tar shards with image files; give one kind")


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset key and suffix of a tar member: ``"a/b.seg.jpg"`` -> ``("a/b", "seg.jpg")``."""
    folder, _, base = name.rpartition("/")
    stem, _, suffix = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), suffix.lower()


def read_shard(path: str, require_labels: bool = True) -> ShardIndex:
    """Index a local tar shard without decoding images (reads headers and ``.cls`` members only).

    A sample without an image is a ``missing_image`` problem; without ``.cls`` a ``missing_label``
    problem when ``require_labels`` (else label ``-1``); a ``.cls`` that is not a non-negative ASCII
    integer a ``bad_label`` problem. A damaged tar gives a ``bad_shard`` problem and keeps the
    samples read before the damage.
    """
    index = ShardIndex()
    group_key: str | None = None
    group: dict[str, tarfile.TarInfo] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, suffix = split_member_name(member.name)
                if key != group_key:
                    if group_key is not None:
                        _add_sample(index, tar, path, group_key, group, require_labels)
                    group_key, group = key, {}
                group.setdefault(suffix, member)
            if group_key is not None:
                _add_sample(index, tar, path, group_key, group, require_labels)
            end = tar.offset
        damage = _end_of_archive_problem(path, end)
        if damage is not None:
            size = os.path.getsize(path)
            cut = [r for r in index.records if r.offset + r.size > size]
            index.records = [r for r in index.records if r.offset + r.size <= size]
            index.problems.append(("bad_shard", os.path.basename(path), f"{path}: {damage}"))
            index.problems.extend(("bad_image", r.key, f"its image is cut off in {path}") for r in cut)
    except (tarfile.TarError, OSError, EOFError) as exc:
        index.problems.append(("bad_shard", os.path.basename(path), f"{path}: {exc}"))
    return index


def _end_of_archive_problem(path: str, end: int) -> str | None:
    """What is wrong after the last member tarfile read (it ended at byte ``end``), or None.

    A whole tar ends with two zero blocks of 512 bytes. Python's tarfile takes a cut or garbled
    header for the end of the archive, so without this check a shard cut inside a header loses
    the rest of its samples silently.
    """
    with open(path, "rb") as f:
        f.seek(end)
        tail = f.read(1024)
    if len(tail) < 1024:
        return (
            f"truncated: it ends {len(tail)} bytes after its last whole member, without the "
            "end-of-archive blocks (samples after that point are lost)"
        )
    if any(tail):
        return f"damaged: unreadable tar header at byte {end} (the samples after it are lost)"
    return None


def _add_sample(
    index: ShardIndex,
    tar: tarfile.TarFile,
    path: str,
    key: str,
    group: dict[str, tarfile.TarInfo],
    require_labels: bool,
) -> None:
    image = next((group[s] for s in IMAGE_SUFFIXES if s in group), None)
    if image is None:
        index.problems.append(("missing_image", key, f"no image member in {path}"))
        return
    label = -1
    if LABEL_SUFFIX in group:
        handle = tar.extractfile(group[LABEL_SUFFIX])
        raw = handle.read() if handle is not None else b""
        try:
            label = int(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            label = -2
        if label < 0:
            index.problems.append(("bad_label", key, f".cls is {raw[:20]!r}, not a class id, in {path}"))
            return
    elif require_labels:
        index.problems.append(("missing_label", key, f"no .cls member in {path}"))
        return
    index.records.append(Record(key, label, path, image.offset_data, image.size))
