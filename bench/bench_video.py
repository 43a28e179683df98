"""Video benchmark: peak resident memory and frames/s of a video turn, by clip length and propagation mode.

    python -m bench.bench_video [--lengths 50 200 1000] [--modes sa2va memory concepts]
                                [--video ../shared/data/videos/01_dog.mp4]

Modes: "sa2va" and "memory" are `[SEG]` propagation by SAM2 (`conv.ask`); "concepts" is SAM 3 concept tracking
(`conv.find("dog")`) on a tiny random full SAM 3 (`model.tiny --family sam3_video`, thresholds 0: every query is
an instance), with at most `--instances` instances tracked.

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


def run_one(video: str, mode: str, tiny: str, sam3: str, instances: int) -> dict:
    import torch

    from model import SegChat
    from model.segmenters.concepts import ConceptOptions
    from tests.helpers import ScriptedAnswer, script

    torch.manual_seed(0)
    chat = SegChat.from_pretrained(tiny, concepts=sam3)
    chat.generate_options = {"logits_processor": [ScriptedAnswer(script(chat, "It is [SEG].<|im_end|>"))]}
    conv = chat.new_conversation()
    start = time.perf_counter()
    if mode == "concepts":
        chat.concept_segmenter.options = ConceptOptions(max_video_instances=instances)
        reply = conv.find("dog", video=video)
    else:
        sampling = "uniform" if mode == "memory" else "first"
        reply = conv.ask("Segment the animal.", video=video, propagation=mode, frame_sampling=sampling)
    seconds = time.perf_counter() - start
    frames = len(reply.segments[0].mask)
    stats = reply.video_stats
    held = stats.max_outputs_held if mode == "concepts" else stats.max_tracked_outputs
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds, "instances": len(reply.segments),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "outputs_held": held}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--modes", nargs="+", default=["sa2va", "memory"])
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument("--side", type=int, default=640)
    parser.add_argument("--instances", type=int, default=4, help="concepts mode: most instances tracked at once")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # internal: VIDEO MODE TINY_DIR SAM3_DIR
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.instances)))
        return

    from model.tiny import build_tiny, build_tiny_sam3

    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny(Path(tmp) / "tiny", "qwen2_5_vl")
        sam3 = build_tiny_sam3(Path(tmp) / "sam3", video=True)
        rows = []
        for n in args.lengths:
            clip = make_clip(Path(args.video), n, Path(tmp) / f"clip_{n}.mp4", args.side)
            for mode in args.modes:
                out = subprocess.run([sys.executable, "-m", "bench.bench_video", "--one", str(clip), mode, str(tiny),
                                      str(sam3), "--instances", str(args.instances)],
                                     cwd=ROOT, capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row.update(mode=mode, length=n)
                rows.append(row)
                print(f"{mode:7s} {n:5d} frames: {row['fps']:6.2f} frames/s, peak RSS {row['peak_rss_mib']:7.1f} MiB, "
                      f"outputs held per object {row['outputs_held']}, objects {row['instances']}", flush=True)
        for mode in args.modes:
            peaks = {r["length"]: r["peak_rss_mib"] for r in rows if r["mode"] == mode}
            lo, hi = min(peaks), max(peaks)
            print(f"{mode}: peak RSS at {hi} frames / at {lo} frames = {peaks[hi] / peaks[lo]:.3f}")


if __name__ == "__main__":
    main()
