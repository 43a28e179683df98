"""The one image-vs-video decision: content first (Pillow's header), the extension only for unreadable files."""

import numpy as np
from PIL import Image

from model.media.kind import media_kind
from tests.helpers import write_bomb_png


def _frames(n: int) -> list[Image.Image]:
    return [Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)) for i in range(n)]


def test_animated_gif_and_png_are_videos_single_frames_are_images(tmp_path):
    animated, still = tmp_path / "a.gif", tmp_path / "s.gif"
    frames = _frames(3)
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(still)
    apng = tmp_path / "a.png"
    frames[0].save(apng, save_all=True, append_images=frames[1:], duration=100)
    assert media_kind(animated) == "video" and media_kind(apng) == "video"
    assert media_kind(still) == "image"


def test_content_wins_over_the_extension(tmp_path):
    picture = tmp_path / "picture.mp4"
    _frames(1)[0].save(picture, format="PNG")
    assert media_kind(picture) == "image"
    clip = tmp_path / "clip.jpg.mov"
    clip.write_bytes(b"\x00\x00\x00\x18ftypqt  " + bytes(64))
    assert media_kind(clip) == "video"


def test_animated_webp_stays_an_image(tmp_path):
    # The bundled FFmpeg cannot decode animated WebP; Pillow shows its first frame.
    path = tmp_path / "a.webp"
    frames = _frames(3)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert media_kind(path) == "image"


def test_unreadable_files_keep_their_extensions_kind(tmp_path):
    broken_jpeg = tmp_path / "broken.jpg"
    broken_jpeg.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    broken_video = tmp_path / "broken.mp4"
    broken_video.write_bytes(b"\x00\x00\x00\x18ftypmp42 broken")
    assert media_kind(broken_jpeg) == "image" and media_kind(broken_video) == "video"
    assert media_kind(write_bomb_png(tmp_path / "bomb.png")) == "image"
