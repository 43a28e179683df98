"""The one decision whether a file is a still image or a video, from its content where that is cheap.

Imports Pillow only: reading an image header costs nothing, while a video container probe (`video_file`) is left to
the video path, which probes once and keeps the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

MediaKind = Literal["image", "video"]
# Formats whose extra frames are an animation that FFmpeg decodes. Not WebP: the bundled FFmpeg cannot decode
# animated WebP, so it stays an image (its first frame); not MPO/TIFF, whose extra frames are other pictures.
_ANIMATIONS = {"GIF", "PNG"}
# Pillow identifies MPEG-1/2 video headers but cannot decode them.
_VIDEO_FORMATS = {"MPEG"}


def media_kind(path: str | Path) -> MediaKind:
    """"video" for an animated GIF or PNG and for what Pillow cannot decode (mp4, webm, mov, mpeg...: the
    container probe of the video path decides whether it really is one); "image" for a picture.

    A file neither reader understands keeps its image extension's kind, so a broken JPEG is reported as an
    image that cannot be read rather than as an unreadable video.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            animated = im.format in _ANIMATIONS and getattr(im, "n_frames", 1) > 1
            return "video" if animated or im.format in _VIDEO_FORMATS else "image"
    except Image.DecompressionBombError:
        return "image"  # the image loader says how large it is
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        pass
    image_format = Image.registered_extensions().get(path.suffix.lower())
    return "image" if image_format and image_format not in _VIDEO_FORMATS else "video"
