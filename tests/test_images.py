"""Reading images of every mode Pillow opens, upright by their EXIF orientation, everywhere
images are read (files, PIL images, the data pipeline, the web page, the demo's samples)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from titok.data.transforms import ImageTransform
from titok.images import open_image, pil_to_tensor, to_batch, to_rgb


def _grey_ramp(mode: str, white: float, dtype: type) -> Image.Image:
    """A 4x8 ramp from black to ``white`` in ``mode``."""
    ramp = np.tile(np.linspace(0, white, 8), (4, 1)).astype(dtype)
    img = Image.fromarray(ramp)  # uint16 -> I;16, int32 -> I, float32 -> F
    assert img.mode == mode
    return img


@pytest.mark.parametrize(
    ("mode", "white", "dtype"),
    [
        ("I;16", 65535, np.uint16),
        ("I", 65535, np.int32),
        ("I", 255, np.int32),
        ("F", 1.0, np.float32),
        ("F", 255.0, np.float32),
    ],
)
def test_wide_grey_modes_keep_their_range(tmp_path: Path, mode: str, white: float, dtype: type) -> None:
    img = _grey_ramp(mode, white, dtype)
    rgb = np.asarray(to_rgb(img))
    assert rgb.shape == (4, 8, 3)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, -1].tolist() == [255, 255, 255]
    assert 100 < rgb[0, 4, 0] < 190  # the middle stays grey (a clipped 16-bit image is white)
    if mode == "I;16":  # a 16-bit grey PNG, read back
        path = tmp_path / "grey16.png"
        img.save(path)
        again = pil_to_tensor(open_image(path))
        assert (
            again[:, 0, 0].max() == 0 and again[:, 0, -1].min() == 1.0 and 0.4 < float(again[0, 0, 4]) < 0.75
        )


@pytest.mark.parametrize("mode", ["LA", "RGBA", "P", "1", "L", "CMYK", "PA"])
def test_other_modes_become_rgb(mode: str) -> None:
    base = Image.new("RGB", (6, 4), (200, 30, 90))
    img = base.convert("P").convert("PA") if mode == "PA" else base.convert(mode)
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (6, 4)


def _rotated_jpeg(orientation: int) -> bytes:
    """A 16x8 JPEG (left half white, right half black) tagged with an EXIF ``orientation``."""
    arr = np.zeros((8, 16, 3), np.uint8)
    arr[:, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", exif=exif, quality=95)
    return buf.getvalue()


def test_exif_orientation_is_honoured_everywhere(tmp_path: Path) -> None:
    data = _rotated_jpeg(6)  # "rotate 90 CW to view": the upright image is 8 wide, 16 tall
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    upright = open_image(path)
    assert upright.size == (8, 16)
    # Rotated clockwise, the white left half is now on top.
    arr = np.asarray(upright).astype(float)
    assert arr[:8].mean() > 200 and arr[8:].mean() < 50
    batch = to_batch(path, 8)
    assert batch.shape == (1, 3, 8, 8)
    with Image.open(path) as img:
        assert to_batch(img, 8).shape == (1, 3, 8, 8)
    decoded = ImageTransform(size=8).decode(data)
    assert decoded.size == (8, 16)

    from titok.web.actions import load_image

    assert load_image(path)[0].size == (8, 16)


def test_a_16_bit_grey_png_is_not_white_through_the_api(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    _grey_ramp("I;16", 65535, np.uint16).resize((16, 16)).save(path)
    batch = to_batch(path, 16)
    assert 0.3 < float(batch.mean()) < 0.7


def test_demo_samples_skip_a_file_that_is_not_an_image(tmp_path: Path, capsys) -> None:
    from titok.samples import extract_samples

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "a_broken.jpg").write_bytes(b"not an image")
    Image.new("RGB", (20, 20), (10, 20, 30)).save(folder / "b.png")
    written = extract_samples(folder, tmp_path / "out", 4)
    assert [p.name for p in written] == ["b.png"]
    assert "a_broken.jpg" in capsys.readouterr().err
    assert torch.equal(
        pil_to_tensor(Image.open(written[0])), pil_to_tensor(Image.new("RGB", (20, 20), (10, 20, 30)))
    )


def test_pixel_ranges_and_numpy_inputs_follow_one_rule() -> None:
    from titok.errors import ImageError

    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(to_batch(x, 16), x)
    as_bytes = (x * 255).round().byte()
    torch.testing.assert_close(to_batch(as_bytes, 16), as_bytes.float() / 255)
    for bad, shown in ((x * 255, r"\[0\.\d+, 25\d"), (x * 2 - 1, r"\[-0\.9")):
        with pytest.raises(ImageError, match=r"expected float pixels in \[0, 1\], got values in " + shown):
            to_batch(bad, 16)
    assert to_batch(x + 5e-4, 16).max() <= 1.0  # rounding noise is clamped, not refused
    with pytest.raises(ImageError, match="dtype torch.int64"):
        to_batch(x.long(), 16)
    hwc = np.asarray(Image.new("RGB", (20, 16), (255, 0, 0)))
    assert to_batch(hwc, 16)[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert to_batch(hwc.astype(np.float32) / 255, 16)[0, 0].min() == 1.0
    assert to_batch(np.stack([hwc, hwc]), 16).shape == (2, 3, 16, 16)
    assert to_batch([hwc, hwc[..., 0]], 16).shape == (2, 3, 16, 16)
    with pytest.raises(ImageError, match=r"\(H, W, 3\)"):
        to_batch(np.zeros((3, 16, 16, 5), np.uint8), 16)


def test_a_huge_png_is_refused_and_a_huge_jpeg_shrunk(tmp_path: Path) -> None:
    from titok.errors import ImageError

    png = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), (9, 9, 9)).save(png)
    with pytest.raises(ImageError, match=r"big.png: 3000x2000 is 6 million pixels, above the 2 million"):
        open_image(png, max_pixels=2_000_000)
    jpg = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), (9, 9, 9)).save(jpg)
    small = open_image(jpg, max_pixels=2_000_000)
    assert small.size[0] * small.size[1] <= 2_000_000 and small.size[0] >= 1000


def test_a_read_only_numpy_image_is_copied_without_a_warning() -> None:
    import warnings

    array = np.asarray(Image.new("RGB", (20, 16), (255, 0, 0)))
    assert not array.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns once per process on a non-writable array
        batch = to_batch(array, 16)
    assert batch.shape == (1, 3, 16, 16) and torch.allclose(batch[0, 0], torch.ones(16, 16))
