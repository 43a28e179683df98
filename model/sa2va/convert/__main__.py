"""Convert an official Sa2VA checkpoint (local folder or hub id) into SegChat's native format.

    python -m model.sa2va.convert SRC DST [--shard-size-gb 2]
"""

import argparse
from pathlib import Path

from model.sa2va.convert.checkpoint import DEFAULT_SHARD_BYTES, convert_checkpoint
from model.loading import resolve_source


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.sa2va.convert", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="Sa2VA checkpoint folder or hub id (its .py files are never downloaded)")
    parser.add_argument("dst", type=Path, help="output folder (new)")
    parser.add_argument("--shard-size-gb", type=float, default=DEFAULT_SHARD_BYTES / 1024**3)
    args = parser.parse_args(argv)
    out = convert_checkpoint(resolve_source(args.src), args.dst, int(args.shard_size_gb * 1024**3))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
