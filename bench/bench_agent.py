"""Agent-mode benchmark: one agent turn broken down into VLM prefill, VLM decode and SAM 3 time, by round.

    python -m bench.bench_agent [--rounds 3] [--repeats 3]

A tiny random plain VLM (`model.tiny --plain`, Qwen3-VL layout) and a tiny random SAM 3 (`--family sam3`),
scripted to search `--rounds` times (a `segment` call per choose round), then keep the first candidate and answer.
Each VLM forward is timed (hooks): the first forward of a generation is its prefill, the others decode one token each.
SAM 3 is timed in `encode` (the image's vision features) and `segment` (phrases on those features); the count
of `encode` calls shows the features are computed once per image whatever the number of rounds. Figures:
medians over `--repeats` turns after one warm-up. The tiny models make this a check of where the time goes and
of how often each part runs, not of a real model's speed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.common import time_calls
from model import SegChat
from model.segmenters.concepts import ConceptOptions
from model.tiny import build_tiny_plain, build_tiny_sam3
from tests.helpers import scripted_rounds, write_image

PHRASES = ["cup", "mug", "thermos", "bottle", "kettle", "jar"]


def timed(owner, name: str, times: dict[str, list[float]], key: str) -> None:
    """Replace `owner.name` by a wrapper that appends each call's seconds to `times[key]`."""
    time_calls(owner, name, lambda start, end: times[key].append(end - start))


def script(rounds: int) -> list[str]:
    calls = [f'<tool_call>{{"name": "segment", "arguments": {{"phrases": ["{PHRASES[i % len(PHRASES)]}"]}}}}'
             "</tool_call><|im_end|>" for i in range(rounds)]
    keep = '<tool_call>{"name": "keep", "arguments": {"candidates": [1]}}</tool_call><|im_end|>'
    return calls + [keep, "The first one keeps coffee warm.<|im_end|>"]


def one_turn(chat: SegChat, image: Path, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = defaultdict(list)
    generations: list[int] = []  # where each generation's forwards start in times["forward"]
    timed(chat.concept_segmenter, "encode", times, "sam3_encode")
    timed(chat.concept_segmenter, "segment", times, "sam3_segment")
    vlm = chat.model.vlm
    started: list[float] = []
    hooks = [vlm.register_forward_pre_hook(lambda *_: started.append(time.perf_counter())),
             vlm.register_forward_hook(lambda *_: times["forward"].append(time.perf_counter() - started.pop()))]
    try:
        with scripted_rounds(chat, *script(rounds)):
            scripted = chat.generate

            def generate(*args, **kwargs):
                generations.append(len(times["forward"]))
                return scripted(*args, **kwargs)

            chat.generate = generate  # (removed with the script's own when the block ends)
            start = time.perf_counter()
            reply = chat.new_conversation().ask("Which of these would keep coffee warm?", image=image)
            total = time.perf_counter() - start
    finally:
        del chat.concept_segmenter.encode, chat.concept_segmenter.segment
        for hook in hooks:
            hook.remove()
    forwards = times["forward"]
    prefill = sum(forwards[i] for i in generations)
    decode = sum(forwards) - prefill
    return {"total_s": total, "prefill_s": prefill, "decode_s": decode,
            "decode_tokens": len(forwards) - len(generations),
            "generations": len(generations), "sam3_encode_s": sum(times["sam3_encode"]),
            "sam3_encodes": len(times["sam3_encode"]), "sam3_segment_s": sum(times["sam3_segment"]),
            "sam3_segments": len(times["sam3_segment"]), "kept": len(reply.segments)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        chat = SegChat.from_pretrained(build_tiny_plain(root / "vlm", "qwen3_vl"),
                                       concepts=build_tiny_sam3(root / "sam3"))
        chat.concept_segmenter.options = ConceptOptions(score=0.0, presence=0.0)
        image = write_image(root / "photo.png", 320, 240)
        for rounds in args.rounds:
            one_turn(chat, image, rounds)  # warm-up
            runs = [one_turn(chat, image, rounds) for _ in range(args.repeats)]
            row = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            print(f"{rounds} search round(s): {row['generations']:.0f} generations, total {row['total_s']:.2f} s = "
                  f"VLM prefill {row['prefill_s']:.2f} s + decode {row['decode_s']:.2f} s "
                  f"({row['decode_tokens']:.0f} tokens) + SAM 3 encode {row['sam3_encode_s']:.3f} s "
                  f"({row['sam3_encodes']:.0f} call) + segment {row['sam3_segment_s']:.3f} s "
                  f"({row['sam3_segments']:.0f} calls); kept {row['kept']:.0f}", flush=True)


if __name__ == "__main__":
    main()
