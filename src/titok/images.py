"""Reading images and turning them into model input.

Model input is a float tensor (B, 3, H, W) in [0, 1]. Preprocessing of a file or PIL image:

1. turn upright by the EXIF orientation tag (phone photos), then convert to RGB with
   :func:`to_rgb` (grey, palette and RGBA images are converted, alpha is dropped; 16- and
   32-bit grey and float images are scaled by their bit depth, not clipped at 255);
2. resize so that the *shorter* side equals ``size`` (bicubic, antialiased);
3. center-crop to ``size`` x ``size``.

This is the evaluation preprocessing of the TiTok authors (shorter side, center crop).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from titok.errors import DataError, ImageError

#: File extensions treated as images when a folder is given.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")

ImageLike = str | os.PathLike[str] | Image.Image | torch.Tensor | np.ndarray

#: How far outside [0, 1] a float pixel may lie (rounding of a decoder's output) before it is refused.
PIXEL_TOLERANCE = 1e-3


@contextlib.contextmanager
def image_errors(name: str | os.PathLike[str]) -> Iterator[None]:
    """Turn what Pillow raises while reading the file ``name`` into an :class:`ImageError` naming it."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ImageError(f"{name}: no such file") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not an image file (cannot identify format)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: too large to decode safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: cannot decode image ({exc})") from exc


#: Pillow's high-bit-depth single-channel modes and the value that stands for white in each.
_WIDE_GREY = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}


def to_rgb(img: Image.Image) -> Image.Image:
    """An upright 8-bit RGB copy of any image Pillow opens.

    The EXIF orientation is applied first. 16-bit grey (``I;16*``) maps 65535 to white; 32-bit
    integer grey (``I``, also how 16-bit PNGs may open) and float grey (``F``) are taken as
    8-bit if their values fit in [0, 255], as 16-bit if they fit in [0, 65535], else scaled
    from their own range (``F`` in [0, 1] is taken as [0, 1]). Alpha is dropped.
    """
    if img.mode == "RGB" and not img.getexif().get(0x0112):
        return img.copy()
    img = ImageOps.exif_transpose(img) or img
    if img.mode in _WIDE_GREY or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if img.mode in _WIDE_GREY:
            white = _WIDE_GREY[img.mode]
        elif img.mode == "F" and low >= 0.0 and high <= 1.0:
            white = 1.0
        elif low >= 0.0 and high <= 255.0:
            white = 255.0
        elif low >= 0.0 and high <= 65535.0:
            white = 65535.0
        else:
            arr, white = arr - low, max(high - low, 1e-12)
        grey = np.clip(np.round(arr / white * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return img.convert("RGB")


#: The largest image decoded at full size for inference (pixels). A JPEG above it is decoded at a
#: reduced scale; another format is refused: a 12000 x 12000 PNG would take 1.4 GB to decode for
#: a model that sees 256 x 256 (Pillow itself only refuses above 179 million pixels).
MAX_PIXELS = 40_000_000


def check_size(img: Image.Image, name: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> None:
    """Shrink a large JPEG while decoding (``draft``), or refuse an image above ``max_pixels``."""
    w, h = img.size
    if w * h <= max_pixels:
        return
    if img.format == "JPEG":
        factor = 1  # JPEG decodes at 1/2, 1/4 or 1/8 scale
        while factor < 8 and (w // factor) * (h // factor) > max_pixels:
            factor *= 2
        img.draft("RGB", (max(1, w // factor), max(1, h // factor)))
        if img.size[0] * img.size[1] <= max_pixels:
            return
    raise ImageError(
        f"{name}: {w}x{h} is {w * h / 1e6:.0f} million pixels, above the {max_pixels / 1e6:.0f} million that "
        "are decoded for inference; shrink it first"
    )


def open_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file as upright RGB (:func:`to_rgb`); raise
    :class:`ImageError` naming the file (also for one above ``max_pixels``, see :func:`check_size`)."""
    path = Path(path)
    with image_errors(path), Image.open(path) as img:
        check_size(img, path, max_pixels)
        img.load()
        return to_rgb(img)


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` then center-crop to a ``size`` x ``size`` square."""
    img = img if img.mode == "RGB" else to_rgb(img)
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor (3, H, W) in [0, 1] (RGB by :func:`to_rgb` if it is not)."""
    arr = np.asarray(img if img.mode == "RGB" else to_rgb(img), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [0, 1] -> PIL RGB image (values clamped, rounded)."""
    arr = x.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def pixel_tensor(x: torch.Tensor) -> torch.Tensor:
    """A pixel tensor as float in [0, 1]: uint8 is divided by 255; floats must lie in [0, 1]
    (within :data:`PIXEL_TOLERANCE`, then clamped), anything else is an :class:`ImageError`
    naming the range found (e.g. a [0, 255] or [-1, 1] tensor)."""
    if x.dtype == torch.uint8:
        return x.float().div(255.0)
    if not x.is_floating_point():
        raise ImageError(f"expected float pixels in [0, 1] or uint8 pixels in [0, 255], got dtype {x.dtype}")
    if x.numel():
        low, high = float(x.min()), float(x.max())
        if not (low >= -PIXEL_TOLERANCE and high <= 1.0 + PIXEL_TOLERANCE):
            raise ImageError(
                f"expected float pixels in [0, 1], got values in [{low:.4g}, {high:.4g}] "
                "(divide [0, 255] images by 255; map [-1, 1] ones with (x + 1) / 2)"
            )
    return x.float().clamp(0.0, 1.0)


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    """HWC (or NHWC) arrays, uint8 or float, -> a tensor (3, H, W) or (N, 3, H, W); grey HW too."""
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim not in (3, 4) or a.shape[-1] not in (1, 3, 4):
        raise ImageError(f"expected a numpy image of shape (H, W, 3) or (N, H, W, 3), got {a.shape}")
    a = a[..., :3] if a.shape[-1] != 1 else np.repeat(a, 3, axis=-1)
    if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
        raise ImageError(f"expected a uint8 or float numpy image, got dtype {a.dtype}")
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # a read-only view (np.asarray of a PIL image): torch wants its own copy
        a = a.copy()
    t = torch.from_numpy(a)
    return t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)


def to_batch(images: ImageLike | Sequence[ImageLike], size: int) -> torch.Tensor:
    """Turn paths, PIL images, tensors or numpy arrays into one float batch (B, 3, size, size) in [0, 1].

    Tensors are (3, H, W) or (B, 3, H, W): float in [0, 1] or uint8 in [0, 255] (divided by
    255); floats outside [0, 1] are refused (:func:`pixel_tensor`). Numpy arrays are images as
    Pillow and OpenCV give them, (H, W, 3) or (N, H, W, 3), uint8 or float (same rule). Images
    not of the model's size are resized and cropped.
    """
    if isinstance(images, np.ndarray):
        images = _from_numpy(images)
    if isinstance(images, torch.Tensor):
        images = pixel_tensor(images)
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ImageError(f"expected an image tensor of shape (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-2:] == (size, size):
            return images.float()
        images = list(images)
    elif isinstance(images, str | os.PathLike | Image.Image):
        images = [images]
    out = []
    for item in images:
        if isinstance(item, np.ndarray):
            item = _from_numpy(item)
        if isinstance(item, torch.Tensor):
            if item.ndim != 3 or item.shape[0] != 3:
                raise ImageError(f"expected an image tensor of shape (3, H, W), got {tuple(item.shape)}")
            item = pixel_tensor(item)
            if item.shape[-2:] == (size, size):
                out.append(item.float())
                continue
            item = tensor_to_pil(item)
        img = to_rgb(item) if isinstance(item, Image.Image) else open_image(item)
        out.append(pil_to_tensor(resize_center_crop(img, size)))
    if not out:
        raise ImageError("no images given")
    return torch.stack(out)


def list_images(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (searched recursively, sorted) into a list of image paths.

    Files given explicitly are kept whatever their extension (a bad one fails later, per file);
    folders contribute files with an image extension. An empty result is a :class:`DataError`.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not paths:
        raise DataError("no input images given")
    return paths
