"""load_image: limits before decoding, display orientation, colour modes, hostile files."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.errors import MediaError
from model.media.image import MediaLimits, load_image
from tests.helpers import shared_path

def _real(name: str) -> Path:
    return shared_path("data", "images", name)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width × height; its pixel data is garbage."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", b"not zlib data")
        + _chunk(b"IEND", b"")
    )
    return path


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_real_photo_loads_as_rgb():
    im = load_image(_real("truck.jpg"))
    assert im.mode == "RGB"
    with Image.open(_real("truck.jpg")) as raw:
        assert im.size == raw.size


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (20000, 20000, "400 Mpx"),  # beyond Pillow's hard limit (DecompressionBombError)
        (10000, 10000, "100 Mpx"),  # Pillow's warning range: must be an error
        (8000, 6000, "8000×6000 pixels (48 Mpx)"),  # under Pillow's limits, over ours
    ],
)
def test_huge_header_refused_before_decoding(tmp_path, width, height, expected):
    path = _png_header_only(tmp_path / "bomb.png", width, height)
    filters_before = list(warnings.filters)
    with pytest.raises(MediaError) as err:
        load_image(path)
    # The pixel data is garbage, so a decode attempt would fail with "damaged" instead.
    assert expected in str(err.value)
    assert "the limit is 40 Mpx" in str(err.value)
    assert warnings.filters == filters_before


def test_custom_pixel_limit(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 50)).save(path)
    with pytest.raises(MediaError, match="100×50 pixels"):
        load_image(path, MediaLimits(max_pixels=4000))


def test_truncated_jpeg_refused(tmp_path):
    data = _real("car_speed.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="damaged or incomplete"):
        load_image(path)


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (None, "missing.jpg", "does not exist"),
        (b"", "empty.png", "empty"),
        (b"hello, I am text\n" * 20, "notes.jpg", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "broken.png", "not an image"),
    ],
    ids=["missing", "empty", "text", "broken-png"],
)
def test_bad_files(tmp_path, content, name, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError, match=message) as err:
        load_image(path)
    assert str(tmp_path) not in str(err.value)  # never leak server paths into the chat


def test_directory_refused(tmp_path):
    with pytest.raises(MediaError, match="not a file"):
        load_image(tmp_path)


def test_file_size_limit():
    with pytest.raises(MediaError, match="MiB; the limit is"):
        load_image(_real("truck.jpg"), MediaLimits(max_file_bytes=50_000))


@pytest.mark.parametrize(("width", "height"), [(1, 1), (1, 300)])
def test_too_small(tmp_path, width, height):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (width, height)).save(path)
    with pytest.raises(MediaError, match="at least 2 pixels"):
        load_image(path)


def test_zero_size_array_and_header(tmp_path):
    with pytest.raises(MediaError, match="empty"):
        load_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(MediaError):
        load_image(_png_header_only(tmp_path / "zero.png", 0, 10))


def test_exif_orientation_gives_display_orientation(tmp_path):
    # Left half red, right half blue; orientation 6 means "rotate 90° clockwise to show".
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    shown = np.asarray(load_image(path)).astype(int)
    assert shown.shape == (40, 20, 3)
    assert np.abs(shown[5, 10] - (255, 0, 0)).max() < 30  # left half went to the top
    assert np.abs(shown[35, 10] - (0, 0, 255)).max() < 30


def test_exif_orientation_on_real_photo(tmp_path):
    with Image.open(_real("example2.jpg")) as raw:
        small = raw.convert("RGB").resize((120, 80))
    exif = Image.Exif()
    exif[0x0112] = 8
    path = tmp_path / "photo.jpg"
    small.save(path, exif=exif)
    assert load_image(path).size == (80, 120)


def test_alpha_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent red: must not show as red
    rgba[0, 1] = (0, 0, 255, 255)
    rgba[0, 2] = (0, 0, 0, 128)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = np.asarray(load_image(path)).astype(int)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 1]) == (0, 0, 255)
    assert np.abs(out[0, 2] - 127).max() <= 1
    la = Image.fromarray(rgba[..., [0, 3]], mode="LA")
    assert tuple(np.asarray(load_image(la))[0, 0]) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([10, 200, 30] + [250, 0, 0] * 255)
    im.putpixel((1, 1), 1)
    path = tmp_path / "pal.png"
    im.save(path, transparency=0)
    out = np.asarray(load_image(path))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[1, 1]) == (250, 0, 0)


def test_grayscale_and_cmyk(tmp_path):
    gray = tmp_path / "gray.png"
    Image.new("L", (3, 3), 100).save(gray)
    assert tuple(np.asarray(load_image(gray))[1, 1]) == (100, 100, 100)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(cmyk, quality=100)
    r, g, b = np.asarray(load_image(cmyk))[4, 4].astype(int)
    assert r < 20 and g > 235 and b > 235  # pure cyan


def test_sixteen_bit_scaled(tmp_path):
    values = np.array([[0, 32896, 65535, 257]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(np.repeat(values, 2, axis=0)).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    out = np.asarray(load_image(path))[0, :, 0]
    assert out.tolist() == [0, 128, 255, 1]
    wide = Image.fromarray(np.repeat(values, 2, axis=0).astype(np.int32), mode="I")
    assert np.asarray(load_image(wide))[0, :, 0].tolist() == [0, 128, 255, 1]


def test_float_mode_refused():
    with pytest.raises(MediaError, match="Floating-point"):
        load_image(Image.new("F", (4, 4), 0.5))


def test_numpy_inputs():
    gray = np.full((5, 6), 7, np.uint8)
    assert tuple(np.asarray(load_image(gray))[0, 0]) == (7, 7, 7)
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[..., 1] = 200
    assert tuple(np.asarray(load_image(rgb))[0, 0]) == (0, 200, 0)
    rgba = np.zeros((5, 6, 4), np.uint8)
    assert tuple(np.asarray(load_image(rgba))[0, 0]) == (255, 255, 255)
    view = np.zeros((6, 5, 3), np.uint8).transpose(1, 0, 2)  # non-contiguous is fine
    assert load_image(view).size == (6, 5)


@pytest.mark.parametrize(
    ("arr", "message"),
    [
        (np.zeros((5, 6, 3), np.float32), "must be uint8"),
        (np.zeros((5, 6, 2), np.uint8), "got shape"),
        (np.zeros((2, 5, 6, 3), np.uint8), "got shape"),
    ],
)
def test_bad_arrays(arr, message):
    with pytest.raises(MediaError, match=message):
        load_image(arr)


def test_unsupported_source_type():
    with pytest.raises(MediaError, match="Unsupported image input"):
        load_image(b"bytes")  # type: ignore[arg-type]


def test_caller_image_not_modified():
    im = Image.new("RGBA", (4, 4), (1, 2, 3, 0))
    load_image(im)
    assert im.mode == "RGBA"


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to count open files")
def test_no_file_handles_left_open(tmp_path):
    good = _real("groceries.jpg")
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(good.read_bytes()[:5000])
    before = _open_fds()
    load_image(good)
    for path in (bad, _png_header_only(tmp_path / "bomb.png", 9000, 9000)):
        with pytest.raises(MediaError):
            load_image(path)
    assert _open_fds() == before
