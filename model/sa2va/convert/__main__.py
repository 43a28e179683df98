"""Convert an official Sa2VA checkpoint (local folder or hub id) into SegChat's native format.

    python -m model.sa2va.convert SRC DST [--shard-size-gb 2] [--dtype bf16]
"""

import argparse
from pathlib import Path

from model.errors import SegChatError
from model.loading import check_files, pick_dtype, reporting, resolve_source
from model.sa2va.convert.checkpoint import DEFAULT_SHARD_BYTES, convert_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.sa2va.convert", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="Sa2VA checkpoint folder or hub id (its .py files are never downloaded)")
    parser.add_argument("dst", type=Path, help="output folder (new)")
    parser.add_argument("--shard-size-gb", type=float, default=DEFAULT_SHARD_BYTES / 1024**3)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                        help="store floating-point weights no wider than this (default: as in the source)")
    args = parser.parse_args(argv)
    dtype = pick_dtype(args.dtype, None) if args.dtype else None
    try:
        src = resolve_source(args.src)
        check_files(src)
        with reporting(f"The Sa2VA checkpoint {src} (converting it)"):
            out = convert_checkpoint(src, args.dst, int(args.shard_size_gb * 1024**3), dtype)
    except SegChatError as err:
        raise SystemExit(f"Could not convert: {err}") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
