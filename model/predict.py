"""Answer one instruction about one image from the command line, writing masks and an overlay.

    python -m model.predict --model PATH_OR_HUB_ID --image photo.jpg "Segment the food richest in vitamin C."
    python -m model.predict --model PATH_OR_HUB_ID --image street.jpg --find car --find "yellow school bus"

`--find` looks for every instance of a phrase with SAM 3 (`--concepts`, default facebook/sam3) instead of asking
the language model; each instance gets its own mask PNG.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from model.errors import SegChatError
from model.inference import Reply, SegChat
from model.segmenters.concepts import DEFAULT_CONCEPTS
from model.media.image import load_image
from model.media.masks import write_png_mask
from model.media.render import overlay


def write_outputs(reply: Reply, image: Image.Image, out_dir: Path) -> list[Path]:
    """One PNG per object found (`mask_01.png`, ...) and `overlay.png`; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    found = [s for s in reply.segments if s.found]
    written = []
    for k, segment in enumerate(found, start=1):
        path = out_dir / f"mask_{k:02d}.png"
        write_png_mask(segment.mask, path)
        written.append(path)
    path = out_dir / "overlay.png"
    Image.fromarray(overlay(np.asarray(image), [s.mask for s in found])).save(path)
    return written + [path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("instruction", nargs="?", help="what to ask (not needed with --find)")
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id")
    parser.add_argument("--image", required=True)
    parser.add_argument("--out", default="segchat_out", help="folder for mask PNGs and overlay.png")
    parser.add_argument("--device", default=None)
    parser.add_argument("--quantization", choices=["none", "4bit", "8bit"], default="none")
    parser.add_argument("--find", action="append", metavar="PHRASE",
                        help="find every instance of PHRASE with SAM 3 (repeat for several phrases)")
    parser.add_argument("--concepts", default=DEFAULT_CONCEPTS,
                        help=f"SAM 3 checkpoint folder or hub id for --find (default: {DEFAULT_CONCEPTS}, gated)")
    parser.add_argument("--threshold", type=float, default=None, help="SAM 3 score threshold (default 0.5)")
    args = parser.parse_args(argv)
    if not args.find and not args.instruction:
        parser.error("give an instruction, or --find PHRASE")
    try:
        image = load_image(args.image)
        chat = SegChat.from_pretrained(args.model, device=args.device, quantization=args.quantization,
                                       concepts=args.concepts if args.find else None)
        conversation = chat.new_conversation()
        if args.find:
            reply = conversation.find(args.find, score_threshold=args.threshold, image=image)
        else:
            reply = conversation.ask(args.instruction, image=image)
    except SegChatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(reply.text)
    for warning in reply.warnings:
        print(f"note: {warning}", file=sys.stderr)
    score_name = "score" if args.find else "predicted IoU"
    for k, segment in enumerate([s for s in reply.segments if s.found], start=1):
        print(f"object {k}: {segment.label or '-'} ({score_name} {segment.score:.2f})")
    for path in write_outputs(reply, image, Path(args.out)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
