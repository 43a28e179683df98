"""Follow-up cost with and without the conversation's cache (`model.context_cache`): the tokens a turn's prefill
reads, and its time to first token (from `ask` to the end of the prefill, whose logits give the first token).

bench_engine's small random Qwen2.5-VL (a 448-px image is 256 image tokens) answers an image question, then text
follow-ups; every answer is forced to 32 tokens, so both runs read the same history.

    python -m bench.bench_cache [--layers 8] [--follow-ups 4] [--repeats 3]
"""

import argparse
import statistics
import time

import numpy as np

from bench.bench_engine import Forced, small_chat
from model.inference import SegChat

IMAGE = np.random.default_rng(0).integers(0, 255, (448, 448, 3), dtype=np.uint8)


def conversation(chat: SegChat, follow_ups: int) -> list[tuple[int, int, float]]:
    """(prompt tokens, prefilled tokens, seconds to first token) for the image turn and each follow-up."""
    answer = chat.processor.tokenizer(" word" * 31 + "<|im_end|>", add_special_tokens=False)["input_ids"]
    rows, turn = [], {}

    def prefill_started(module, args, kwargs):
        if "prefilled" not in turn:
            turn["prefilled"] = kwargs["input_ids"].shape[1]
            turn["prompt"] = turn["prefilled"] + kwargs["past_key_values"].get_seq_length()

    def prefill_done(module, args, output):
        turn.setdefault("first_token", time.perf_counter())

    hooks = [chat.model.vlm.register_forward_pre_hook(prefill_started, with_kwargs=True),
             chat.model.vlm.register_forward_hook(prefill_done)]
    conv = chat.new_conversation()
    try:
        for k in range(follow_ups + 1):
            chat.generate_options = {"logits_processor": [Forced(answer)]}
            turn.clear()
            start = time.perf_counter()
            if k == 0:
                conv.ask("Describe the picture.", image=IMAGE)
            else:
                conv.ask(f"Tell me more, part {k}.")
            rows.append((turn["prompt"], turn["prefilled"], turn["first_token"] - start))
    finally:
        for hook in hooks:
            hook.remove()
        chat.generate_options = {}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--follow-ups", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    chat = small_chat(args.layers)
    chat.limits.max_new_tokens = 32
    runs = {}
    for reuse in (False, True):
        chat.reuse_cache = reuse
        conversation(chat, 1)  # warm-up
        runs[reuse] = [conversation(chat, args.follow_ups) for _ in range(args.repeats)]
    print(f"small Qwen2.5-VL, {args.layers} layers, CPU; median of {args.repeats} conversations")
    print("turn          prompt  prefilled (off / on)  time to first token, ms (off / on)")
    for k in range(args.follow_ups + 1):
        off, on = ([run[k] for run in runs[reuse]] for reuse in (False, True))
        ms = [statistics.median(row[2] for row in rows) * 1000 for rows in (off, on)]
        name = "image turn" if k == 0 else f"follow-up {k}"
        print(f"{name:<12}  {off[0][0]:>6}  {off[0][1]:>9} / {on[0][1]:<9}  {ms[0]:>8.1f} / {ms[1]:.1f}")


if __name__ == "__main__":
    main()
