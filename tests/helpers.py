"""Helpers shared by the tests: shared material, scripted answers, media files made in place, a real app server."""

from __future__ import annotations

import socket
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LogitsProcessor

from chat.settings import MIB, AppSettings
from chat.ui import build_demo, launch

SHARED = Path(__file__).resolve().parents[2] / "shared"
FAMILIES = ["internvl", "qwen2_5_vl", "qwen3_vl"]


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when the folder is absent (a user's clone)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared material beside the repository")
    return path


class ScriptedAnswer(LogitsProcessor):
    """Makes greedy decoding emit `token_ids` in order (tests need answers with known [SEG]s)."""

    def __init__(self, token_ids: list[int]):
        self.token_ids = token_ids
        self.prompt_len = 0
        self.last_len = -1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] != self.last_len + 1:  # a new generate call
            self.prompt_len = input_ids.shape[1]
        self.last_len = input_ids.shape[1]
        step = min(input_ids.shape[1] - self.prompt_len, len(self.token_ids) - 1)
        forced = torch.full_like(scores, -1e9)
        forced[:, self.token_ids[step]] = 0
        return forced


def script(chat, text: str) -> list[int]:
    """Token ids of an answer written with markup, e.g. 'It is <p>red</p> [SEG].<|im_end|>'."""
    return chat.processor.tokenizer(text, add_special_tokens=False)["input_ids"]


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
def serving_concepts(chat) -> Iterator[str]:
    """`serving` a chat with concept search whose (random) SAM 3 counts every phrase as present: a random
    model's presence hovers around the 0.5 threshold. The score threshold is the app's slider."""
    from model.segmenters.concepts import ConceptOptions

    segmenter = chat.concept_segmenter
    segmenter.options = ConceptOptions(presence=0.0)
    try:
        with serving(chat) as address:
            yield address
    finally:
        segmenter.options = ConceptOptions()


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
