"""SegChat web app: `python app.py` serves the chat on http://127.0.0.1:7860 (see README, "Chat app")."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.processing import Limits

DEFAULT_MODEL = "ByteDance/Sa2VA-Qwen3-VL-4B"
# Below this much GPU memory the default model does not fit in bf16 next to its activations: load it in 4 bits.
FULL_PRECISION_MIN_GIB = 14
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from "200", "200MB", "1.5GiB", "500kb" (a bare number is MiB)."""
    found = _SIZE.match(text)
    if not found:
        raise argparse.ArgumentTypeError(f"not a file size: {text!r} (use e.g. 200MB or 1GB)")
    unit = (found.group(2) or "m")[0].lower()
    return int(float(found.group(1)) * {"k": 2**10, "m": 2**20, "g": 2**30}[unit])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="SegChat: chat with a model that answers with segmentation masks.")
    parser.add_argument("--model", default=os.environ.get("SEGCHAT_MODEL"),
                        help=f"Hugging Face hub id or local checkpoint folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--agent", default=None, metavar="VLM",
                        help="a plain vision-language model (hub id or folder, e.g. Qwen/Qwen3-VL-4B-Instruct) "
                             "in agent mode: it segments by calling SAM 3 (--concepts) as a tool. Alone it is the "
                             "app's model; with --model or --demo both are loaded and the person chooses")
    parser.add_argument("--demo", action="store_true",
                        help="serve the tiny demo model trained on synthetic shapes (built on first use)")
    parser.add_argument("--quantization", choices=["none", "4bit", "8bit"], default=None,
                        help="quantize the language model (default: 4bit when the GPU has less than "
                             f"{FULL_PRECISION_MIN_GIB} GiB, else none)")
    parser.add_argument("--concepts", default=os.environ.get("SEGCHAT_CONCEPTS", "facebook/sam3"),
                        help="SAM 3 checkpoint (hub id or folder) for “Find all” / “Find every one”, loaded on "
                             "first use; facebook/sam3 is gated (accept its licence on the hub). 'none' turns "
                             "concept search off (default: facebook/sam3)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu... (default: cuda when available)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--max-file-size", type=parse_size, default=parse_size("100MB"),
                        help="largest upload accepted (default 100MB)")
    parser.add_argument("--turn-video-frames", type=int, default=None,
                        help="most video frames segmented per turn (default: 16 on CPU, 600 on GPU)")
    parser.add_argument("--turn-video-side", type=int, default=None,
                        help="video frames are downscaled to this many pixels on the long side (default: 640 on "
                             "CPU, 1280 on GPU)")
    return parser.parse_args(argv)


def choose_quantization(requested: str | None, device: str | None) -> str | None:
    """The user's choice, else 4-bit on a GPU too small for the default model in bf16."""
    if requested is not None:
        return None if requested == "none" else requested
    import torch

    if device not in (None, "cuda") and not str(device).startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        return None
    index = torch.device(device or "cuda").index or 0
    total_gib = torch.cuda.get_device_properties(index).total_memory / 2**30
    return "4bit" if total_gib < FULL_PRECISION_MIN_GIB else None


def _demo_checkpoint() -> str:
    try:
        from model.recipes.proof.demo import demo_checkpoint
    except ImportError as err:
        raise SystemExit(f"The demo model is not available in this version ({err}). "
                         "Run without --demo, or pass --model with a checkpoint.") from None
    return str(demo_checkpoint(progress=True))


def load_chats(args: argparse.Namespace, limits: Limits | None = None):
    """The app's model and, when an agent is served beside it, the agent (else None), both with `limits` (a
    `model.Limits`; None: the library's defaults); exits with a message saying what to do when one cannot be loaded
    (never a traceback)."""
    from model.errors import SegChatError
    from model.inference import SegChat

    model = _demo_checkpoint() if args.demo else args.model
    sources = [(args.agent, "agent")] if args.agent else []
    if model or not args.agent:
        sources.insert(0, (model or DEFAULT_MODEL, None))
    quantization = choose_quantization(args.quantization, args.device)
    concepts = None if args.concepts.lower() == "none" else args.concepts
    chats = []
    for source, mode in sources:
        print(f"Loading {source} (quantization: {quantization or 'none'})...", file=sys.stderr)
        try:
            chats.append(SegChat.from_pretrained(source, device=args.device, quantization=quantization,
                                                 concepts=concepts, mode=mode, limits=limits))
        except SegChatError as err:
            raise SystemExit(f"Could not load the model: {err}") from None
    return chats[0], (chats[1] if len(chats) > 1 else None)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Requests a person got wrong are logged by `chat` as one INFO line each; faults as errors with a traceback.
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("chat").setLevel(logging.INFO)
    from chat.settings import AppSettings, WorkBudget

    settings = AppSettings(max_file_bytes=args.max_file_size)
    chat, agent = load_chats(args, settings.model_limits)  # the model checks media by the limits the page shows
    from chat.ui import build_demo, launch

    budget = WorkBudget.for_device(chat.device.type)
    settings = replace(settings, budget=WorkBudget(args.turn_video_frames or budget.frames,
                                                   args.turn_video_side or budget.side))
    launch(build_demo(chat, settings, agent=agent), host=args.host, port=args.port, share=args.share,
           settings=settings)


if __name__ == "__main__":
    main()
