"""Run a model over a dataset by free generation, shard the work over processes, write the report."""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from model.agent.loop import AgentStep
from model.data.sample import Sample
from model.evaluation.scoring import RULES, Scored, score, summarize
from model.media.image import load_image
from model.media.masks import decode_rle
from model.media.render import overlay

_FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _video_source(path: Path):
    """A frame folder becomes a list of frames (sorted by name); a video file is passed as its path."""
    if path.is_dir():
        return [Image.open(p).convert("RGB") for p in sorted(path.iterdir()) if p.suffix.lower() in _FRAME_SUFFIXES]
    return path


def predict(chat, sample: Sample) -> tuple[str, list[np.ndarray], list[AgentStep]]:
    """The freely generated answer to `sample`'s instruction in a fresh conversation, its masks, and (agent mode)
    the trace of its tool calls."""
    conversation = chat.new_conversation()
    if sample.masks and sample.masks[0].ndim == 3:
        reply = conversation.ask(sample.instruction, video=_video_source(sample.media_path))
    else:
        reply = conversation.ask(sample.instruction, image=sample.media_path)
    return reply.text, [np.asarray(s.mask, dtype=bool) for s in reply.segments], reply.trace


def agent_counts(trace: Sequence[AgentStep]) -> dict[str, int]:
    """An agent turn's tool calls (segment, keep, none) and rounds (generations); empty for a [SEG] model."""
    if not trace:
        return {}
    kinds = [step.kind for step in trace]
    return {"tool_calls": sum(k in ("segment", "keep", "none") for k in kinds),
            "rounds": sum(k != "candidates" for k in kinds)}


def evaluate_indices(chat, samples: Sequence[Sample], indices: Sequence[int], empty_iou: float = 1.0,
                     progress: bool = False) -> list[Scored]:
    from tqdm.auto import tqdm

    results = []
    for i in tqdm(indices, desc="evaluate", disable=not progress):
        sample = samples[i]
        text, preds, trace = predict(chat, sample)
        group = sample.meta.get("split", sample.meta.get("template"))
        scored = score(i, group, text, preds, sample.masks, sample.ignore, empty_iou)
        scored.agent = agent_counts(trace)
        results.append(scored)
    return results


def write_overlays(samples: Sequence[Sample], results: list[Scored], out_dir: Path, k: int) -> list[str]:
    """Overlays of the `k` lowest-IoU image samples: ground truth first colour, prediction second."""
    worst = sorted((r for r in results if r.pred is not None), key=lambda r: r.iou)[:k]
    names = []
    for rank, r in enumerate(worst):
        image = np.asarray(load_image(samples[r.index].media_path))
        name = f"worst_{rank:02d}_sample{r.index}_iou{r.iou:.2f}.png"
        Image.fromarray(overlay(image, [decode_rle(r.gt), decode_rle(r.pred)])).save(out_dir / name)
        names.append(name)
    return names


def write_report(out_dir: Path, samples: Sequence[Sample], results: list[Scored], info: dict, empty_iou: float,
                 worst: int) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: r.index)
    report = {**info, "empty_iou": empty_iou, "rules": RULES, "metrics": summarize(results, empty_iou),
              "overlays": write_overlays(samples, results, out_dir, worst),
              "samples": [{k: v for k, v in asdict(r).items() if k not in ("pred", "gt", "ignore")}
                          for r in results]}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report


def run(chat, samples: Sequence[Sample], out_dir: Path, info: dict, empty_iou: float = 1.0, worst: int = 4,
        accelerator=None, progress: bool = True) -> dict | None:
    """Evaluate every sample (split over `accelerator`'s processes when given); the main process writes
    `out_dir/report.json` and returns the report, other processes return None."""
    started = time.time()
    indices = list(range(len(samples)))
    if accelerator is None or accelerator.num_processes == 1:
        results = evaluate_indices(chat, samples, indices, empty_iou, progress)
    else:
        from accelerate.utils import gather_object

        with accelerator.split_between_processes(indices) as mine:
            mine_results = evaluate_indices(chat, samples, mine, empty_iou, progress and accelerator.is_main_process)
        results = gather_object(mine_results)
        if not accelerator.is_main_process:
            return None
    info = {**info, "seconds": round(time.time() - started, 1)}
    return write_report(out_dir, samples, results, info, empty_iou, worst)
