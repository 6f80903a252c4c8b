"""Decoding and preprocessing of training and evaluation images.

Both produce a float tensor (3, S, S) in [0, 1]:

* training (``augment=True``): resize the shorter side to S (bicubic, antialiased), take a random
  S x S crop, flip horizontally with probability 1/2;
* evaluation (``augment=False``): resize the shorter side to S and center-crop
  (:func:`titok.images.resize_center_crop`).

Randomness comes only from the ``random.Random`` passed in, so a sample's augmentation is
reproducible. With ``fast_jpeg``, JPEGs are decoded at a reduced DCT scale (1/2, 1/4 or 1/8, PIL
``draft``) when the image is at least twice the target size, which is several times faster than a
full decode and changes pixels only slightly.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import torch
from PIL import Image

from titok.errors import ConfigError
from titok.images import pil_to_tensor, resize_center_crop, to_rgb


@dataclass(frozen=True)
class ImageTransform:
    """Bytes -> PIL RGB image -> float tensor (3, size, size) in [0, 1].

    Args:
        size: output side S in pixels.
        augment: random crop + horizontal flip (training) instead of a center crop.
        fast_jpeg: decode JPEGs at a reduced scale when they are >= 2x the target size.
    """

    size: int
    augment: bool = False
    fast_jpeg: bool = False

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ConfigError(f"data.image_size: must be positive, got {self.size}")

    def decode(self, data: bytes) -> Image.Image:
        """Decode encoded image bytes to RGB; raises (OSError, ...) on damaged data."""
        img = Image.open(io.BytesIO(data))
        if self.fast_jpeg and img.format == "JPEG":
            img.draft("RGB", (self.size, self.size))
        img.load()
        return to_rgb(img)

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        """Preprocess one RGB image; ``rng`` drives the crop and flip (a fresh unseeded one if None)."""
        if not self.augment:
            return pil_to_tensor(resize_center_crop(img, self.size))
        rng = rng if rng is not None else random.Random()
        img = resize_shorter_side(img if img.mode == "RGB" else to_rgb(img), self.size)
        w, h = img.size
        left, top = rng.randint(0, w - self.size), rng.randint(0, h - self.size)
        img = img.crop((left, top, left + self.size, top + self.size))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(img)


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """Resize (bicubic, antialiased) so the shorter side is ``size``; same rule as ``resize_center_crop``."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=None)


def train_transform(size: int, fast_jpeg: bool = True) -> ImageTransform:
    """Training preprocessing: shorter side to ``size``, random crop, random horizontal flip."""
    return ImageTransform(size, augment=True, fast_jpeg=fast_jpeg)


def eval_transform(size: int, fast_jpeg: bool = False) -> ImageTransform:
    """Evaluation preprocessing: shorter side to ``size``, center crop (full-scale decode by default)."""
    return ImageTransform(size, augment=False, fast_jpeg=fast_jpeg)
