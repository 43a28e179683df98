"""Video benchmark: peak resident memory and frames/s of a video turn, by clip length and propagation mode.

    python -m bench.bench_video [--lengths 50 200 1000] [--modes sa2va memory] [--video ../shared/data/videos/01_dog.mp4]

Long clips are synthesized by looping a real video (decoded frames downscaled to --side px, re-encoded as H.264),
so decoding stays part of the measurement. Each (mode, length) runs in a fresh subprocess, so the peak RSS
(ru_maxrss) is that run's own. Run with OMP_NUM_THREADS=1 on a shared CPU (thread contention slows the tiny
model ~50x). Model: a tiny random SegChat (model.tiny), answer scripted to one [SEG].
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "videos" / "01_dog.mp4"


def make_clip(src: Path, n: int, out: Path, side: int) -> Path:
    from model.media.export import write_h264_mp4
    from model.media.video_file import VideoFile

    source = VideoFile(src)

    def frames():
        produced = 0
        while produced < n:
            for _, frame in source.frames(max_side=side):
                yield frame
                produced += 1
                if produced >= n:
                    return

    return write_h264_mp4(frames(), out, fps=30)


def run_one(video: str, mode: str, tiny: str) -> dict:
    import torch

    from model import SegChat
    from tests.conftest import ScriptedAnswer, script

    torch.manual_seed(0)
    chat = SegChat.from_pretrained(tiny)
    chat.generate_options = {"logits_processor": [ScriptedAnswer(script(chat, "It is [SEG].<|im_end|>"))]}
    conv = chat.new_conversation()
    sampling = "uniform" if mode == "memory" else "first"
    start = time.perf_counter()
    reply = conv.ask("Segment the animal.", video=video, propagation=mode, frame_sampling=sampling)
    seconds = time.perf_counter() - start
    frames = len(reply.segments[0].mask)
    stats = reply.video_stats
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "max_tracked_outputs": stats.max_tracked_outputs, "max_pixel_frames": stats.max_pixel_frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--modes", nargs="+", default=["sa2va", "memory"])
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument("--side", type=int, default=640)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # internal: VIDEO MODE TINY_DIR
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return

    from model.tiny import build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny(Path(tmp) / "tiny", "qwen2_5_vl")
        rows = []
        for n in args.lengths:
            clip = make_clip(Path(args.video), n, Path(tmp) / f"clip_{n}.mp4", args.side)
            for mode in args.modes:
                out = subprocess.run([sys.executable, "-m", "bench.bench_video", "--one", str(clip), mode, str(tiny)],
                                     cwd=ROOT, capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row.update(mode=mode, length=n)
                rows.append(row)
                print(f"{mode:7s} {n:5d} frames: {row['fps']:6.2f} frames/s, peak RSS {row['peak_rss_mib']:7.1f} MiB, "
                      f"tracked outputs held {row['max_tracked_outputs']}", flush=True)
        for mode in args.modes:
            peaks = {r["length"]: r["peak_rss_mib"] for r in rows if r["mode"] == mode}
            lo, hi = min(peaks), max(peaks)
            print(f"{mode}: peak RSS at {hi} frames / at {lo} frames = {peaks[hi] / peaks[lo]:.3f}")


if __name__ == "__main__":
    main()
