"""SegChat against the official Sa2VA code, side by side, on one Sa2VA-Qwen3-VL-4B checkpoint in the published layout.

    python -m bench.bench_official [--cases image1 image4 followup video] [--layers 2] [--vision-layers N]
                                   [--frames 30] [--threads 2] [--workdir DIR]

The checkpoint: `config.json`, fp32 safetensors (as released) and tokenizer / processor files of Sa2VA-Qwen3-VL-4B
(`model.sa2va.published.RELEASES`, built by `bench.common.release_checkpoint`): real widths and vocabulary, `--layers`
text and `--vision-layers` vision layers (default 2 and 2), the FULL SAM2 Hiera-L, random weights (so the
arithmetic is real; nothing is trained). The tokenizer is a small BPE trained in-process with Qwen3-VL's and Sa2VA's
added tokens (the config's media ids point at them).

Both sides get the same checkpoint, the same inputs (a photo from ../shared/data/images, the first `--frames` frames
of ../shared/data/videos/01_dog.mp4, decoded once to PNG files; the app's examples where ../shared is absent) and
the same answers, and run fp32 on the CPU with `--threads` torch threads. Each measurement is a fresh process that
loads the model, reads every weight once, resets its peak RSS (/proc/self/clear_refs) and runs the turn: the peak
RSS is the process's own during the turn (model included); its increase over the loaded model is given too, split
where `generate` returns (the peak is read and reset there: media preprocessing, vision tower and LLM before, SAM2
and masks after). Wall time and CPU time (all threads) are both reported: on a shared machine the CPU time shows
when a side got less of the CPU. Load and conversion are not timed: SegChat converts the published layout once, in a
separate process before any measurement, into a cache that every SegChat process then loads.

Runtime on 2 CPU cores: about an hour with the defaults, nearly all of it the video case (each side encodes the 30
frames with the full Hiera-L, about 30 s a frame here); `--cases image1 image4 followup` takes about 8 minutes and
`--frames N` shortens the video case proportionally.

Cases:
- image1: an image turn whose answer names 1 object (one [SEG]).
- image4: the same with 4 objects.
- followup: after an (untimed) image1 turn, a text question about the same image, answered in text. Time to first
  token (TTFT) and the whole turn. The official code has no conversation state: a follow-up is another
  `predict_forward(image=..., text=..., past_text=...)` that recomputes everything (for an image call it ignores
  `past_text`, so its prompt is only the image and the new question; SegChat's prompt is the whole conversation,
  of which it prefills only the new question: the rest is in the conversation's cache, `model.context_cache`).
- video: a `--frames`-frame clip (default 30). Official: `predict_forward(video=frames)`: the first 5 frames go to
  the LLM, all frames to SAM2, which prompts frames 0-4 with the [SEG] embedding and propagates through the clip by
  memory, keeping every frame (fp32 1024x1024 input and tracking state) until it returns; one SAM2 run per [SEG].
  SegChat: `conv.ask(text, video=frames)`, "sa2va" propagation (the same frames prompted), streamed. Its memory
  target compares what the turn adds to the process at its peak, over the loaded model; the whole process's peak
  (printed too) is mostly the weights, the same on both sides.

The official side: `projects/sa2va/hf/models_qwen3vl/*.py` of bytedance/Sa2VA (`--official`), run by the
virtualenv's python (`--official-python`, transformers 4.57) exactly as the oracles were made
(tests/fixtures/official_code.py): the files copied into a scratch folder beside the checkpoint's files and loaded
with `AutoModel.from_pretrained(folder, trust_remote_code=True, torch_dtype=torch.float32)` and `AutoProcessor`;
only the CPU edits are applied (`init_state` on the CPU, SAM2 given its bf16-rounded input as fp32; the oracles'
trunk narrowing is NOT applied: the full Hiera-L runs), `Tensor.cuda` is the identity, and every call runs under
`torch.no_grad()` as the oracles ran it.

How the answers are forced (random weights never say [SEG]): a `bench.common.Forced` logits processor emits a fixed
token sequence (same ids on both sides, ending with `<|im_end|>`). SegChat: `chat.generate_options
["logits_processor"] = LogitsProcessorList([forced])`. Official: the instance attribute `model.model.generate`
(the Qwen3-VL `generate` that `predict_forward` calls) is replaced by a wrapper that calls the original with the
same arguments plus `logits_processor=LogitsProcessorList([forced])`; nothing else of the official call changes
(it still asks for `output_hidden_states`, `max_new_tokens=2048`, greedy). The wrapper also times `generate` on
both sides (on SegChat's, `SegChat.generate`: a prompt of several pictures is read in parts before the
transformers `generate` reads the last one), and the official TTFT is when the logits processor first runs (the prefill is done and the first token
is being chosen; the official code has no streamer). SegChat's TTFT is its first chunk from `conv.ask_stream`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import (ROOT, Forced, machine, markdown_table, reset_peak_rss, rss_mib, run_child,
                          time_calls)

SHARED = ROOT.parent / "shared" / "data"
DEFAULT_IMAGE = SHARED / "images" / "groceries.jpg"
DEFAULT_VIDEO = SHARED / "videos" / "01_dog.mp4"
FALLBACK_IMAGE = ROOT / "chat" / "examples" / "example2.jpg"  # where ../shared is absent
FALLBACK_VIDEO = ROOT / "chat" / "examples" / "01_dog.mp4"
OFFICIAL_CODE = Path("/work/official-sa2va/projects/sa2va/hf/models_qwen3vl")
OFFICIAL_PYTHON = Path("/work/venv-official/bin/python")
RELEASE = "Sa2VA-Qwen3-VL-4B"
CASES = ("image1", "image4", "followup", "video")
TARGETS = {"image4": ("time", 2.0), "followup": ("ttft", 5.0), "video": ("memory", 2.0)}

# (question, forced answer) per turn; the answers end with the template's stop word.
QUESTIONS = {
    "image1": ("Which item here would you use to make a salad? Segment it.",
               "Sure, it is <p>the lettuce</p> [SEG].<|im_end|>"),
    "image4": ("Please segment every fruit you can see.",
               "Here: <p>the oranges</p> [SEG], <p>the apples</p> [SEG], <p>the bananas</p> [SEG] and "
               "<p>the grapes</p> [SEG].<|im_end|>"),
    "followup": ("Which one of them is the ripest?", "The bananas look the ripest: their peel is yellow.<|im_end|>"),
    "video": ("Please segment the animal in this video.", "Sure, it is <p>the dog</p> [SEG].<|im_end|>"),
}


# --- the measured processes ------------------------------------------------------------------------------------


def _read_weights(module: torch.nn.Module) -> None:
    """Touch every weight once, as a first forward does (memory-mapped weights count in RSS only once read)."""
    with torch.no_grad():
        for param in module.parameters():
            param.detach().sum()


class Meter:
    """What a measured turn records: wall and CPU seconds (CPU time over all threads shows contention on a shared
    machine), `generate`'s seconds, and the peak RSS in two phases: until `generate` returns (media preprocessing,
    vision tower, LLM) and after it (SAM2, masks): the peak is read and reset when `generate` returns."""

    def __init__(self):
        self.generate_s: list[float] = []
        self.llm_peak = None

    def after_generate(self, start: float, end: float) -> None:
        self.generate_s.append(end - start)
        self.llm_peak = rss_mib("VmHWM:")
        reset_peak_rss()

    def start(self) -> None:
        self.generate_s.clear()
        self.llm_peak = None
        self.base = reset_peak_rss()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def result(self, forced: Forced, masks: int, ttft: float | None = None) -> dict:
        after = rss_mib("VmHWM:")
        llm = self.llm_peak or after
        return {"seconds": time.perf_counter() - self.wall, "cpu_s": time.process_time() - self.cpu,
                "generate_s": sum(self.generate_s), "ttft": ttft, "prompt_tokens": forced.start,
                "answer_tokens": forced.steps, "masks": masks, "loaded_mib": self.base, "llm_peak_mib": llm,
                "after_llm_peak_mib": after, "peak_mib": max(llm, after)}


def ours_child(job: dict) -> dict:
    """One case with SegChat, in this process (the converted cache is in $SEGCHAT_CACHE)."""
    from PIL import Image
    from transformers import LogitsProcessorList

    from model import SegChat

    torch.set_num_threads(job["threads"])
    chat = SegChat.from_pretrained(job["checkpoint"], device="cpu", dtype="fp32")
    _read_weights(chat.model)
    forced = Forced(job["answers"][job["case"]])
    chat.generate_options["logits_processor"] = LogitsProcessorList([forced])
    meter = Meter()
    time_calls(chat, "generate", meter.after_generate)
    image = Image.open(job["image"]).convert("RGB")
    conv = chat.new_conversation()
    case = job["case"]
    if case == "followup":
        forced.reset(job["answers"]["image1"])
        conv.ask(QUESTIONS["image1"][0], image=image)
        forced.reset(job["answers"]["followup"])
    meter.start()
    if case == "followup":
        ttft = None
        for item in conv.ask_stream(QUESTIONS[case][0]):
            if ttft is None:
                ttft = time.perf_counter() - meter.wall
        return meter.result(forced, len(item.segments), ttft)
    if case == "video":
        frames = [Image.open(path).convert("RGB") for path in job["frames"]]
        reply = conv.ask(QUESTIONS[case][0], video=frames)
    else:
        reply = conv.ask(QUESTIONS[case][0], image=image)
    return meter.result(forced, len(reply.segments))


def official_child(job: dict) -> dict:
    """One case with the official code (run by the official virtualenv's python)."""
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, LogitsProcessorList

    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # CPU patch, as the oracles were made
    torch.set_num_threads(job["threads"])
    folder = job["official_folder"]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True, torch_dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    _read_weights(model)
    forced = Forced(job["answers"][job["case"]])
    meter = Meter()
    time_calls(model.model, "generate", meter.after_generate, extra={"logits_processor": LogitsProcessorList([forced])})
    image = Image.open(job["image"]).convert("RGB")
    case = job["case"]

    def predict(**call) -> dict:
        with torch.no_grad():
            return model.predict_forward(processor=processor, tokenizer=processor.tokenizer, **call)

    if case == "followup":
        forced.reset(job["answers"]["image1"])
        first = predict(image=image, text="<image>" + QUESTIONS["image1"][0])
        forced.reset(job["answers"]["followup"])
        past = QUESTIONS["image1"][0] + "\n" + first["prediction"].replace("<|im_end|>", "") + "\n"
    meter.start()
    if case == "followup":
        out = predict(image=image, text=QUESTIONS[case][0], past_text=past)
        return meter.result(forced, len(out["prediction_masks"]), forced.first_at - meter.wall)
    if case == "video":
        frames = [Image.open(path).convert("RGB") for path in job["frames"]]
        out = predict(video=frames, text="<image>" + QUESTIONS[case][0])
    else:
        out = predict(image=image, text="<image>" + QUESTIONS[case][0])
    return meter.result(forced, len(out["prediction_masks"]))


def convert_child(job: dict) -> dict:
    """Convert the published layout into SegChat's cache (once; not timed in the table)."""
    from model import SegChat

    start = time.perf_counter()
    SegChat.from_pretrained(job["checkpoint"], device="cpu", dtype="fp32")
    return {"seconds": time.perf_counter() - start}


CHILDREN = {"ours": ours_child, "official": official_child, "convert": convert_child}


# --- the parent ----------------------------------------------------------------------------------------------


def prepare(args, root: Path) -> dict:
    """Checkpoint, scratch folder of the official code, inputs and answer ids; returns the job description."""
    from transformers import AutoTokenizer

    from bench.common import release_checkpoint

    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from official_code import SAM2_FP32_INPUT, patched_official_code

    start = time.perf_counter()
    corpus = [text for pair in QUESTIONS.values() for text in pair]
    checkpoint = release_checkpoint(root / "checkpoint", RELEASE, args.layers, args.vision_layers, seed=0,
                                    corpus=corpus)
    official = patched_official_code(args.official, root / "official", (SAM2_FP32_INPUT,), narrow=False)
    for path in checkpoint.iterdir():
        (official / path.name).symlink_to(path)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=False)  # config.json names remote code
    answers = {case: tokenizer(answer, add_special_tokens=False)["input_ids"] for case, (_, answer) in
               QUESTIONS.items()}
    inputs = root / "inputs"
    inputs.mkdir()
    image = inputs / "image.png"
    from PIL import Image

    Image.open(args.image).convert("RGB").save(image)
    frames = []
    from model.media.video_file import VideoFile

    for t, frame in VideoFile(args.video).frames():
        if t >= args.frames:
            break
        frames.append(inputs / f"frame_{t:03d}.png")
        Image.fromarray(frame).save(frames[-1])
    weights = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    print(f"checkpoint: {RELEASE} layout, {args.layers} text + {args.vision_layers} vision layers, SAM2 Hiera-L, "
          f"random fp32 weights, {weights / 1024**3:.2f} GiB; built in {time.perf_counter() - start:.0f} s",
          flush=True)
    return {"checkpoint": str(checkpoint), "official_folder": str(official), "image": str(image),
            "frames": [str(f) for f in frames], "answers": answers, "threads": args.threads}


def measure(side: str, job: dict, args, env: dict) -> dict:
    python = str(args.official_python) if side == "official" else sys.executable
    return run_child(["-m", "bench.bench_official", "--child", side, json.dumps(job)], python=python, env=env)


def ratio(ours: float, official: float) -> str:
    return f"{official / ours:.2f}x" if ours else "-"


def _increase(r: dict, key: str) -> float:
    """MiB over the loaded model at the peak `key`."""
    return r[key] - r["loaded_mib"]


def report(results: dict, args) -> None:
    gib = 1024
    rows, detail = [], []
    for case, (ours, official) in results.items():
        name = {"video": f"video ({len(args.frame_paths)} frames)"}.get(case, case)
        memory = [f"{ours['peak_mib'] / gib:.2f} GiB", f"{official['peak_mib'] / gib:.2f} GiB",
                  ratio(ours["peak_mib"], official["peak_mib"])]
        if case == "followup":
            rows.append([f"{name}: time to first token", f"{ours['ttft']:.2f}", f"{official['ttft']:.2f}",
                         ratio(ours["ttft"], official["ttft"]), *memory])
        rows.append([f"{name}: whole turn" if case == "followup" else name, f"{ours['seconds']:.2f}",
                     f"{official['seconds']:.2f}", ratio(ours["seconds"], official["seconds"]), *memory])
        for side, r in (("ours", ours), ("official", official)):
            detail.append([case, side, r["prompt_tokens"], r["answer_tokens"], r["masks"], f"{r['cpu_s']:.0f}",
                           f"{r['generate_s']:.2f}", f"{r['seconds'] - r['generate_s']:.2f}",
                           f"{r['loaded_mib'] / gib:.2f}", f"+{_increase(r, 'llm_peak_mib') / gib:.2f}",
                           f"+{_increase(r, 'after_llm_peak_mib') / gib:.2f}"])
    print(f"\nMachine: {machine()}; both sides run with {args.threads} torch threads, fp32.")
    print(f"Checkpoint: {RELEASE} published layout, {args.layers} text + {args.vision_layers} vision layers, SAM2 "
          "Hiera-L; ratio = official / ours (above 1: SegChat is faster or smaller). Conversion and loading "
          "excluded.\n")
    print(markdown_table(["case", "ours s", "official s", "ratio", "ours peak RSS", "official peak RSS", "ratio"],
                         rows))
    print("\nWhere the time and memory go. CPU s: the turn's CPU time over all threads (less sensitive than wall "
          "time to other work on the machine); generate: the LLM's `generate` call, the vision tower included; "
          "rest: media preprocessing, SAM2 and mask post-processing. Peak RSS over the loaded model until generate "
          "returns (preprocessing, vision tower, LLM; the official code has already resized every frame for SAM2) "
          "and after it (SAM2, masks):\n")
    print(markdown_table(["case", "side", "prompt tokens", "answer tokens", "masks", "CPU s", "generate s", "rest s",
                          "RSS loaded GiB", "+ until generate returns", "+ after (SAM2)"], detail))
    print("\nTargets (issue #19):")
    for case, (kind, target) in TARGETS.items():
        if case not in results:
            continue
        ours, official = results[case]
        if kind == "memory":  # what the turn adds at its peak; the loaded weights are the same on both sides
            got = _increase(official, "peak_mib") / _increase(ours, "peak_mib")
        else:
            key = {"time": "seconds", "ttft": "ttft"}[kind]
            got = official[key] / ours[key]
        line = f"- {case} {kind}: {got:.2f}x (target >= {target:g}x) {'met' if got >= target else 'NOT met'}"
        if kind == "memory":
            line += (f" (the turn's peak over the loaded model); the whole process's peak, weights included: "
                     f"{official['peak_mib'] / ours['peak_mib']:.2f}x")
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--layers", type=int, default=2, help="text layers (the release has 36)")
    parser.add_argument("--vision-layers", type=int, default=None, help="vision layers (default: --layers)")
    parser.add_argument("--frames", type=int, default=30, help="frames of the video case")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE if DEFAULT_IMAGE.exists() else FALLBACK_IMAGE)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO if DEFAULT_VIDEO.exists() else FALLBACK_VIDEO)
    parser.add_argument("--official", type=Path, default=OFFICIAL_CODE,
                        help="projects/sa2va/hf/models_qwen3vl of a bytedance/Sa2VA checkout")
    parser.add_argument("--official-python", type=Path, default=OFFICIAL_PYTHON,
                        help="python of a virtualenv with transformers 4.57 and qwen-vl-utils")
    parser.add_argument("--workdir", type=Path,
                        help="keep the checkpoint, inputs and each measurement here; a rerun with the same settings "
                             "reuses them and measures only what is missing (default: a temporary folder)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("job", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(args.job))))
        return
    args.vision_layers = args.vision_layers or args.layers
    for path, what in ((args.official, "--official"), (args.official_python, "--official-python"),
                       (args.image, "--image")):
        if not path.exists():
            parser.error(f"{what} {path} does not exist")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_official_") as tmp:
        results = run(args, args.workdir or Path(tmp))
    report(results, args)
    print(f"\nTotal run: {(time.perf_counter() - started) / 60:.1f} min")


def run(args, root: Path) -> dict:
    """Every case on both sides; measurements already in `root/results.json` (same settings) are kept."""
    settings = {"layers": args.layers, "vision_layers": args.vision_layers, "frames": args.frames,
                "image": str(args.image), "video": str(args.video), "official": str(args.official)}
    saved = root / "job.json"
    if saved.exists() and json.loads(saved.read_text())["settings"] == settings:
        job = json.loads(saved.read_text())["job"]
        print(f"reusing the checkpoint and inputs in {root}", flush=True)
    else:
        marker = root / "bench_official.workdir"
        if marker.exists():
            shutil.rmtree(root)  # a run of this script with other settings
        elif root.exists() and any(root.iterdir()):
            sys.exit(f"--workdir {root} is not empty and was not made by this script")
        root.mkdir(parents=True, exist_ok=True)
        marker.touch()
        job = prepare(args, root)
        saved.write_text(json.dumps({"settings": settings, "job": job}))
    args.frame_paths = job["frames"]
    env = {"SEGCHAT_CACHE": str(root / "cache"), "HF_MODULES_CACHE": str(root / "modules"),
           "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    converted = run_child(["-m", "bench.bench_official", "--child", "convert", json.dumps(job)], env=env)
    print(f"SegChat converted the published layout in {converted['seconds']:.0f} s (not in the table)", flush=True)
    store = root / "results.json"
    done = json.loads(store.read_text()) if store.exists() else {}
    results = {}
    for case in args.cases:
        job["case"] = case
        for side in ("ours", "official"):
            key = f"{case}/{side}/{args.threads}"
            if key not in done:
                done[key] = measure(side, job, args, env)
                store.write_text(json.dumps(done, indent=1))
            r = done[key]
            print(f"  {case:>8} {side:>8}: {r['seconds']:.2f} s, peak RSS {r['peak_mib'] / 1024:.2f} GiB"
                  + (f", TTFT {r['ttft']:.2f} s" if r["ttft"] is not None else ""), flush=True)
        results[case] = (done[f"{case}/ours/{args.threads}"], done[f"{case}/official/{args.threads}"])
    return results


if __name__ == "__main__":
    main()
