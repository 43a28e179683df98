"""What the benchmarks share: forced answers, peak-RSS measurement in a child process, markdown tables, a
description of the machine, and Sa2VA checkpoints in a release's published layout (real widths, any depth).

Nothing here times anything; the `bench_*` scripts do.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import LogitsProcessor

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3

# --- forced answers ------------------------------------------------------------------------------------------


class Forced(LogitsProcessor):
    """Makes greedy decoding emit `ids` in order, whatever the weights (random weights never say [SEG]); after
    the last id it keeps emitting that one (the stop word). A new `generate` call starts the sequence again.
    `first_at` is the `time.perf_counter()` of the latest call's first step: the prefill is done and the first
    token is being chosen (time to first token, for code that has no streamer)."""

    def __init__(self, ids: list[int]):
        self.reset(ids)

    def reset(self, ids: list[int]) -> None:
        """Force `ids` from the next `generate` call on."""
        self.ids, self.start, self.last, self.first_at = list(ids), None, -1, None

    @property
    def steps(self) -> int:
        """Tokens chosen in the latest call (0 before any)."""
        return 0 if self.start is None else self.last - self.start + 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[1]
        if self.start is None or length != self.last + 1:  # a new generate call
            self.start, self.first_at = length, time.perf_counter()
        self.last = length
        out = torch.full_like(scores, -1e9)
        out[:, self.ids[min(length - self.start, len(self.ids) - 1)]] = 0
        return out


# --- timing calls ----------------------------------------------------------------------------------------------


def time_calls(owner, attribute: str, record: Callable[[float, float], None], extra: dict | None = None,
               clock: Callable[[], float] = time.perf_counter) -> Callable[[], None]:
    """Replace `owner.<attribute>` (a method) by a wrapper that calls it with the `extra` keyword arguments added
    and passes each call's (start, end) by `clock` to `record`; returns what puts the original back."""
    original = getattr(owner, attribute)
    shadowed = attribute in vars(owner)

    def wrapper(*args, **kwargs):
        start = clock()
        try:
            return original(*args, **kwargs, **(extra or {}))
        finally:
            record(start, clock())

    def restore() -> None:
        if shadowed:
            setattr(owner, attribute, original)
        else:
            delattr(owner, attribute)

    setattr(owner, attribute, wrapper)
    return restore


# --- peak resident memory of a child process -----------------------------------------------------------------


def rss_mib(field: str = "VmRSS:") -> float:
    """This process's resident memory ("VmRSS:") or its peak since the last reset ("VmHWM:"), MiB (Linux)."""
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith(field))) / 1024


def reset_peak_rss() -> float:
    """Reset this process's peak RSS to its current RSS (a child inherits its parent's peak across fork and exec)
    and return the current RSS in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_mib()


def run_child(args: list[str], python: str = sys.executable, cwd: Path = ROOT, env: dict | None = None,
              timeout: float | None = None) -> dict:
    """Run `python args...` in a fresh process and return the JSON object on the last line of its stdout; a
    failure raises with the end of its stderr."""
    out = subprocess.run([python, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                         env={**os.environ, **(env or {})})
    if out.returncode:
        raise RuntimeError(f"{' '.join(args[:3])} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- printing ------------------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table; numbers are printed as given (format them first)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """CPU model and count, torch threads, memory, versions: one line."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return (f"{os.cpu_count()} CPUs ({cpu}), torch threads {torch.get_num_threads()}, {memory:.0f} GiB RAM, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


# --- Sa2VA checkpoints in a published layout ---------------------------------------------------------------

# Qwen3-VL's added tokens after <|endoftext|>, <|im_start|>, <|im_end|> (special flag as published), then Sa2VA's.
QWEN_VL_TOKENS = [("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
                  ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
                  ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
                  ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
                  ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False),
                  ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
                  ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False)]
SA2VA_TOKENS = ["[SEG]", "<p>", "</p>", "<vp>", "</vp>"]
# Qwen3-VL-Instruct's chat template for what the benchmarks send (no system turn by default, no tools): user
# turns of images, videos and text, assistant turns of text.
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' or 'video' in item %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in item %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Qwen3-VL's image and video processors as published (patch 16, merge 2, mean = std = 0.5).
_QWEN3_VL_PIXELS = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "merge_size": 2,
                    "patch_size": 16, "temporal_patch_size": 2, "resample": 3, "rescale_factor": 1 / 255,
                    "processor_class": "Qwen3VLProcessor"}
QWEN3_VL_IMAGE_PROCESSOR = dict(_QWEN3_VL_PIXELS, image_processor_type="Qwen2VLImageProcessorFast",
                                size={"longest_edge": 16777216, "shortest_edge": 65536})
QWEN3_VL_VIDEO_PROCESSOR = dict(_QWEN3_VL_PIXELS, video_processor_type="Qwen3VLVideoProcessor", fps=2,
                                do_sample_frames=True, min_frames=4, max_frames=768,
                                size={"longest_edge": 25165824, "shortest_edge": 4096})


def qwen_vl_tokenizer(corpus: list[str] | None = None):
    """A small byte-level BPE trained in-process (`model.tiny.build_tokenizer`) with Qwen3-VL's added tokens and
    Sa2VA's `[SEG]`, `<p>`, `</p>`, `<vp>`, `</vp>`, and Qwen3-VL's chat template (for the official processor)."""
    from tokenizers import AddedToken

    from model.tiny import build_tokenizer

    tokenizer = build_tokenizer("qwen3_vl", corpus=corpus)
    present = {t.content for t in tokenizer.added_tokens_decoder.values()}
    for content, special in QWEN_VL_TOKENS + [(t, True) for t in SA2VA_TOKENS]:
        if content not in present:
            tokenizer.add_tokens([AddedToken(content, special=special, normalized=False)], special_tokens=special)
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tokenizer


def with_token_ids(config: dict, tokenizer) -> dict:
    """A Qwen-VL-flavour config.json with the media and bos/eos ids of `tokenizer` (the vocabulary size, hence the
    embedding and head sizes, stays the release's)."""
    config = json.loads(json.dumps(config))
    ids = tokenizer.convert_tokens_to_ids
    config.update(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                  vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    for text in (config["text_config"], config):
        for field, token in (("bos_token_id", "<|endoftext|>"), ("eos_token_id", "<|im_end|>")):
            if field in text:
                text[field] = ids(token)
    return config


def release_checkpoint(dst: Path, name: str, text_layers: int = 0, vision_layers: int | None = None,
                       dtype: torch.dtype | None = None, seed: int | None = None, corpus: list[str] | None = None,
                       sam2=None) -> Path:
    """A checkpoint folder in the published layout of release `name` (`model.sa2va.published.RELEASES`): real
    widths, `text_layers` / `vision_layers` layers (0: the release's depth), SAM2 as the release ships it (Hiera-L)
    unless `sam2` (a `Sam2Dims`) says otherwise,
    weights zero (`seed` None) or random, stored in `dtype` (default: the release's). Qwen3-VL releases get a
    tokenizer with Qwen3-VL's and Sa2VA's added tokens whose ids the config names, the chat template and the
    image / video processor files, so that the official code loads and runs them too; other flavours get
    `model.tiny.build_tokenizer`'s (enough to convert and load)."""
    from model.sa2va.convert.sa2va import detect_flavour
    from model.sa2va.published import RELEASES, with_depth, write_checkpoint
    from model.tiny import build_tokenizer

    release = RELEASES[name]
    vision_layers = text_layers if vision_layers is None else vision_layers
    config = release.config
    if text_layers or vision_layers:
        full = (config.get("text_config") or config["llm_config"])["num_hidden_layers"]
        full_vision = config["vision_config"].get("depth") or config["vision_config"].get("num_hidden_layers")
        config = with_depth(config, text_layers or full, vision_layers or full_vision)
    flavour = detect_flavour(config)
    if flavour == "qwen3_vl":
        tokenizer = qwen_vl_tokenizer(corpus)
        config = with_token_ids(config, tokenizer)
    else:
        tokenizer = build_tokenizer(flavour, corpus=corpus)
    folder = write_checkpoint(dst, config, tokenizer, dtype or release.dtype, sam2 or release.sam2, seed=seed)
    if flavour == "qwen3_vl":
        # tokenizer_config.json as the release has it (transformers 4.57 reads it too; transformers 5 writes the
        # special tokens as a list it cannot read)
        path = folder / "tokenizer_config.json"
        saved = json.loads(path.read_text())
        special = saved.pop("extra_special_tokens", None) or saved.pop("additional_special_tokens", [])
        saved.pop("backend", None)
        saved.update(additional_special_tokens=special, tokenizer_class="Qwen2Tokenizer", bos_token=None,
                     add_bos_token=False, add_prefix_space=False, clean_up_tokenization_spaces=False,
                     errors="replace", split_special_tokens=False, model_max_length=262144,
                     processor_class="Qwen3VLProcessor")
        path.write_text(json.dumps(saved, indent=2))
        (folder / "preprocessor_config.json").write_text(json.dumps(QWEN3_VL_IMAGE_PROCESSOR, indent=2))
        (folder / "video_preprocessor_config.json").write_text(json.dumps(QWEN3_VL_VIDEO_PROCESSOR, indent=2))
    return folder
