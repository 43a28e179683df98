"""Answer one instruction about one image from the command line, writing masks and an overlay.

    python -m model.predict --model PATH_OR_HUB_ID --image photo.jpg "Segment the food richest in vitamin C."
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from model.errors import SegChatError
from model.inference import Reply, SegChat
from model.media.image import load_image
from model.media.masks import write_png_mask
from model.media.render import overlay


def write_outputs(reply: Reply, image: Image.Image, out_dir: Path) -> list[Path]:
    """One PNG per segment (`mask_01.png`, ...) and `overlay.png`; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k, segment in enumerate(reply.segments, start=1):
        path = out_dir / f"mask_{k:02d}.png"
        write_png_mask(segment.mask, path)
        written.append(path)
    path = out_dir / "overlay.png"
    Image.fromarray(overlay(np.asarray(image), [s.mask for s in reply.segments])).save(path)
    return written + [path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("instruction")
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id")
    parser.add_argument("--image", required=True)
    parser.add_argument("--out", default="segchat_out", help="folder for mask PNGs and overlay.png")
    parser.add_argument("--device", default=None)
    parser.add_argument("--quantization", choices=["none", "4bit", "8bit"], default="none")
    args = parser.parse_args(argv)
    try:
        image = load_image(args.image)
        chat = SegChat.from_pretrained(args.model, device=args.device, quantization=args.quantization)
        reply = chat.new_conversation().ask(args.instruction, image=image)
    except SegChatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(reply.text)
    for warning in reply.warnings:
        print(f"note: {warning}", file=sys.stderr)
    for k, segment in enumerate(reply.segments, start=1):
        print(f"object {k}: {segment.label or '-'} (predicted IoU {segment.score:.2f})")
    for path in write_outputs(reply, image, Path(args.out)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
