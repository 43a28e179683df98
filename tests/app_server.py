"""Test helpers for the chat app: media files made in place and a real server on a free port."""

from __future__ import annotations

import socket
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from chat.settings import MIB, AppSettings
from chat.ui import build_demo, launch
from conftest import ScriptedAnswer, script

ANSWER = "It is <p>the red apple</p> [SEG] and <p>the cup</p> [SEG].<|im_end|>"
SETTINGS = AppSettings(max_file_bytes=4 * MIB, video_max_frames=4, session_ttl_s=600, cache_ttl_s=600)


def write_image(path: Path, width: int = 96, height: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def write_bomb_png(path: Path, side: int = 40_000) -> Path:
    """A tiny PNG whose header claims side × side pixels (1.6 Gpx): the decompression-bomb shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(chat, answer: str = ANSWER, settings: AppSettings = SETTINGS) -> Iterator[str]:
    """Serve the app for `chat` (answers forced to `answer`) on 127.0.0.1; yields its URL."""
    chat.generate_options = {"logits_processor": [ScriptedAnswer(script(chat, answer))]}
    demo = build_demo(chat, settings)
    launch(demo, port=free_port(), settings=settings, block=False)
    try:
        yield demo.local_url
    finally:
        demo.close()
        chat.generate_options = {}
