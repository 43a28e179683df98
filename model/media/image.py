"""Safe image loading: size limits before decoding, display orientation, RGB output.

Colour policy (documented choice): transparency is composited on white, because the
colour under fully transparent pixels is arbitrary (often black) and dropping alpha
would show it; 16-bit data ("I;16*", and "I" read as 0..65535) is scaled to 8 bits by
dividing by 257, so 65535 maps to 255 and 0 to 0.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.errors import MediaError

ImageSource = str | Path | Image.Image | np.ndarray

# Errors Pillow raises for damaged pixel data (SyntaxError for broken PNG chunks).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)
_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")
# warnings.catch_warnings() swaps a process-wide filter list; concurrent entries from
# several threads could restore each other's state, so entries are serialised.
_WARNINGS_LOCK = threading.Lock()
# The widest long-side / short-side ratio every model family's preprocessing takes: Qwen-VL refuses ratios above
# 200 after rounding both sides to multiples of 28 (a 41-pixel side becomes 28), so originals above about 136
# can fail there; InternVL tiling and SAM2's square resize take any ratio.
MAX_ASPECT_RATIO = 100.0


@dataclass(frozen=True)
class MediaLimits:
    """Limits applied to every image before its pixels are decoded."""

    max_pixels: int = 40_000_000
    max_file_bytes: int = 50 * 1024 * 1024
    min_side: int = 2
    max_aspect_ratio: float = MAX_ASPECT_RATIO


def plain_number(value: float) -> str:
    """A limit or a measure as people read it, never rounded to a whole number: 40, 2.5, 0.49."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def megapixels(pixels: int) -> str:
    """"40 Mpx": how refusals and the app's page state a number of pixels."""
    return f"{plain_number(pixels / 1e6)} Mpx"


def mebibytes(size: int) -> str:
    """"1.5 MiB": how refusals and the app's page state a file size."""
    return f"{plain_number(size / 2**20)} MiB"


def check_aspect_ratio(width: int, height: int, max_ratio: float, what: str = "image") -> None:
    """Raise MediaError when a width × height picture is more elongated than the model can take."""
    ratio = max(width, height) / min(width, height)
    if ratio > max_ratio:
        raise MediaError(f"The {what} is {width}×{height} pixels: one side is {ratio:.0f} times the other, and "
                         f"the model takes at most {max_ratio:.0f} times. Please crop it.")


def check_size(width: int, height: int, limits: MediaLimits) -> None:
    """Raise MediaError when a width × height image is empty, too small, too large or too elongated."""
    if width <= 0 or height <= 0:
        raise MediaError(f"The image is empty ({width}×{height} pixels).")
    if min(width, height) < limits.min_side:
        raise MediaError(
            f"The image is {width}×{height} pixels; each side must be at least "
            f"{limits.min_side} pixels."
        )
    if width * height > limits.max_pixels:
        raise MediaError(
            f"The image is {width}×{height} pixels ({megapixels(width * height)}); "
            f"the limit is {megapixels(limits.max_pixels)}."
        )
    check_aspect_ratio(width, height, limits.max_aspect_ratio)


def _open_header(path: Path, limits: MediaLimits) -> Image.Image:
    """Image.open (header only) with Pillow's decompression-bomb warning as an error."""
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        found = _BOMB_SIZE.search(str(e))
        claimed = f" ({megapixels(int(found.group(1)))})" if found else ""
        raise MediaError(
            f"The image is too large{claimed}; the limit is {megapixels(limits.max_pixels)}."
        ) from None
    except UnidentifiedImageError:
        raise MediaError(f"“{path.name}” is not an image in a format I can read.") from None
    except (OSError, ValueError, SyntaxError):
        # Pillow's message may contain the server-side path, so it is not passed on.
        raise MediaError(f"“{path.name}” could not be read as an image.") from None


def check_media_file(path: Path, max_bytes: int, kind: str = "image") -> None:
    """Refuse a missing, empty or oversized file before anything decodes it."""
    if not path.exists():
        raise MediaError(f"The {kind} file “{path.name}” does not exist.")
    if not path.is_file():
        raise MediaError(f"“{path.name}” is not a file.")
    size = path.stat().st_size
    if size == 0:
        raise MediaError(f"The {kind} file “{path.name}” is empty (0 bytes).")
    if size > max_bytes:
        raise MediaError(f"The {kind} file is {mebibytes(size)}; the limit is {mebibytes(max_bytes)}.")


def _from_path(path: Path, limits: MediaLimits) -> Image.Image:
    check_media_file(path, limits.max_file_bytes)
    with _open_header(path, limits) as im:
        # transpose/convert return new images, so the file can be closed on exit.
        return _from_pil(im, limits, f"The image “{path.name}”")


def _from_array(arr: np.ndarray, limits: MediaLimits) -> Image.Image:
    if arr.dtype != np.uint8:
        raise MediaError(f"Image arrays must be uint8, got {arr.dtype}.")
    if arr.ndim == 2:
        mode = "L"
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        mode = "RGB" if arr.shape[2] == 3 else "RGBA"
    else:
        raise MediaError(
            f"Image arrays must be H×W, H×W×3 or H×W×4; got shape {tuple(arr.shape)}."
        )
    check_size(arr.shape[1], arr.shape[0], limits)
    return _to_rgb(Image.fromarray(np.ascontiguousarray(arr), mode=mode))


def _from_pil(im: Image.Image, limits: MediaLimits, what: str = "The image") -> Image.Image:
    check_size(*im.size, limits)
    try:
        im.load()
    except _DECODE_ERRORS as e:
        # Pillow refuses truncated data unless ImageFile.LOAD_TRUNCATED_IMAGES is set.
        raise MediaError(f"{what} is damaged or incomplete and cannot be decoded ({e}).") from None
    return _to_display_rgb(im)


def _to_display_rgb(im: Image.Image) -> Image.Image:
    try:
        shown = ImageOps.exif_transpose(im)
    except (OSError, ValueError, SyntaxError, TypeError):
        # A malformed EXIF block only loses the orientation hint; the pixels are fine.
        shown = im
    return _to_rgb(shown)


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _sixteen_bit_to_rgb(im: Image.Image) -> Image.Image:
    values = np.asarray(im).astype(np.int64)
    gray = (np.clip(values, 0, 65535) + 128) // 257
    return Image.fromarray(gray.astype(np.uint8), mode="L").convert("RGB")


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_rgb(im)
    if mode == "F":
        raise MediaError(
            "Floating-point images are not supported; please send an 8- or 16-bit image."
        )
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        return _on_white(im.convert("RGBA"))
    try:
        return im.convert("RGB")
    except ValueError:
        raise MediaError(f"Images in colour mode {mode} are not supported.") from None


def load_image(source: ImageSource, limits: MediaLimits = MediaLimits()) -> Image.Image:
    """Load an image as RGB in display orientation, or raise MediaError.

    Accepts a file path, a PIL image (not modified) or a uint8 array of shape
    H×W, H×W×3 or H×W×4. Sizes are checked from the header before decoding.
    """
    if isinstance(source, (str, Path)):
        return _from_path(Path(source), limits)
    if isinstance(source, Image.Image):
        return _from_pil(source, limits)
    if isinstance(source, np.ndarray):
        return _from_array(source, limits)
    raise MediaError(f"Unsupported image input of type {type(source).__name__}.")
