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
from tokenizers import AddedToken
from transformers import LogitsProcessor

from chat.settings import MIB, AppSettings
from chat.ui import build_demo, launch
from model.tiny import build_tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared"
FAMILIES = ["internvl", "qwen2_5_vl", "qwen3_vl"]


# The added tokens of the published Qwen3-VL tokenizer (and Sa2VA's), in order, with their `special` flag: the
# tool, fill-in-the-middle and thinking tokens are added but not special.
QWEN3_VL_ADDED_TOKENS = [
    *[(t, True) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                          "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
                          "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")],
    *[(t, False) for t in ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                           "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
                           "<think>", "</think>")],
    *[(t, True) for t in ("[SEG]", "<p>", "</p>", "<vp>", "</vp>")],
]


def published_qwen3_vl_tokenizer():
    """A tokenizer trained in-process with the added tokens of the published Sa2VA-Qwen3-VL layout."""
    tokenizer = build_tokenizer("qwen3_vl")
    present = {token.content for token in tokenizer.added_tokens_decoder.values()}
    for content, special in QWEN3_VL_ADDED_TOKENS:
        if content not in present:
            tokenizer.add_tokens([AddedToken(content, special=special, normalized=not special)],
                                 special_tokens=special)
    return tokenizer


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


@contextmanager
def scripted_rounds(chat, *answers: str) -> Iterator[list]:
    """While active, the chat's k-th generation answers `answers[k]` (agent turns generate several times); yields
    the list of the `VisionInputs` each generation saw."""
    seen: list = []
    queue = list(answers)
    original = chat.generate

    def generate(prompt_ids, vision, *args, **kwargs):
        chat.generate_options = {"logits_processor": [ScriptedAnswer(script(chat, queue.pop(0)))]}
        seen.append(vision)
        return original(prompt_ids, vision, *args, **kwargs)

    chat.generate = generate
    try:
        yield seen
    finally:
        del chat.generate
        chat.generate_options = {}


def script(chat, text: str) -> list[int]:
    """Token ids of an answer written with markup, e.g. 'It is <p>red</p> [SEG].<|im_end|>'."""
    return chat.processor.tokenizer(text, add_special_tokens=False)["input_ids"]


ANSWER = "It is <p>the red apple</p> [SEG] and <p>the cup</p> [SEG].<|im_end|>"
SETTINGS = AppSettings(max_file_bytes=4 * MIB, video_max_frames=4, session_ttl_s=600, cache_ttl_s=600)


def write_image(path: Path, width: int = 96, height: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def write_video(path: Path, frames: int = 6, width: int = 64, height: int = 48, fps: int = 10) -> Path:
    """An H.264 mp4 of `frames` random frames (sides rounded up to even numbers, as yuv420p needs)."""
    import av

    width, height = width + width % 2, height + height % 2
    rng = np.random.default_rng(frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
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
def serving(chat, answer: str = ANSWER, settings: AppSettings = SETTINGS, agent=None) -> Iterator[str]:
    """Serve the app for `chat` (answers forced to `answer`; `agent` beside it, if given) on 127.0.0.1; yields
    its URL."""
    chat.generate_options = {"logits_processor": [ScriptedAnswer(script(chat, answer))]}
    demo = build_demo(chat, settings, agent=agent)
    launch(demo, port=free_port(), settings=settings, block=False)
    try:
        yield demo.local_url
    finally:
        demo.close()
        chat.generate_options = {}
