"""`sa2va` propagation against the official Sa2VA video references (oracles in ../shared/oracle).

The reference [SEG] embedding prompts SAM2 (weights converted by `model.sa2va.convert.sa2va`) on the LLM frames 0..4;
frame 5 is tracked by memory. Low-res logits of the conditioning frames and of the memory-tracked frame, object
scores and the final masks are compared with the official code's arrays (video tolerance 2e-3, oracle READMEs §7).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import SHARED, shared_path

pytestmark = pytest.mark.slow

ATOL_VIDEO = 2e-3


def _oracle_video_cases() -> list[tuple[str, str]]:
    root = SHARED / "oracle"
    cases = []
    for folder in sorted(root.glob("*/cases.json")):
        for case in json.loads(folder.read_text())["cases"]:
            if case.get("video"):
                cases.append((folder.parent.name, case["name"]))
    return cases or [("absent", "absent")]


def _reference(folder: Path, case: str) -> dict:
    """Embedding, frames, low-res logits per frame ({t: [256,256]}), object scores, final logits/masks."""
    ref = folder / "reference"
    if (ref / case / "seg_embeds.npy").exists():  # InternVL flavour (b_video)
        d = ref / case
        lowres = np.load(d / "sam2_lowres_mask_logits_frames_0_5.npy")[0]  # [2, 256, 256]: frames 0 and 5
        return {
            "embedding": np.load(d / "seg_embeds.npy"),
            "frames": sorted((ref / "inputs" / "video").glob("frame_*.png")),
            "lowres": {0: lowres[0], 5: lowres[1]},
            "object_scores": np.load(d / "sam2_object_score_logits.npy")[0],
            "final_logits": np.load(d / "final_mask_logits.npy")[0],
            "masks": np.load(d / "pred_masks.npz")["pred_masks"][0],
        }
    d = ref / case  # Qwen flavours
    lowres = np.load(d / "sam2_lowres_mask_logits.npy")[:, 0]  # [F, 256, 256]
    case_spec = next(c for c in json.loads((folder / "cases.json").read_text())["cases"] if c["name"] == case)
    return {
        "embedding": np.load(d / "seg_embeddings_after_text_hidden_fcs.npy"),
        "frames": [folder / p for p in case_spec["video"]],
        "lowres": dict(enumerate(lowres)),
        "object_scores": np.load(d / "sam2_decoder_object_score_logits.npy")[:, 0],
        "final_logits": np.load(d / "mask_logits_orig_res.npy"),
        "masks": np.load(d / "pred_masks.npy")[0],
    }


@pytest.mark.parametrize("oracle,case", _oracle_video_cases())
def test_sa2va_video_parity(oracle, case):
    folder = shared_path("oracle", oracle)
    from model import SegChat
    from model.video.clip import VideoClip, VideoOptions

    torch.manual_seed(0)
    segmenter = SegChat.from_pretrained(folder, device="cpu", dtype="fp32").video_segmenter
    ref = _reference(folder, case)
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in ref["frames"]]
    clip = VideoClip(frames, VideoOptions(propagation="sa2va", llm_frames=5))
    lowres: dict[int, np.ndarray] = {}
    scores: dict[int, float] = {}

    def keep(t, out):
        lowres[t] = out.pred_masks[0, 0].float().numpy()
        scores[t] = float(out.object_score_logits.reshape(-1)[0])

    embedding = torch.from_numpy(ref["embedding"])
    result = segmenter.segment(clip, embedding, {}, "sa2va", on_frame=keep)

    assert result.key_frames == [0, 1, 2, 3, 4]
    assert sorted(lowres) == list(range(len(frames)))
    for t, expected in ref["lowres"].items():
        np.testing.assert_allclose(lowres[t], expected, atol=ATOL_VIDEO, rtol=0,
                                   err_msg=f"{oracle}/{case}: low-res logits of frame {t} "
                                           f"({'memory-tracked' if t >= 5 else 'conditioning'})")
    np.testing.assert_allclose([scores[t] for t in range(len(frames))], ref["object_scores"], atol=1e-3)
    # Final masks at the original size, except where the official logits are within noise of 0.
    masks = np.asarray(result.masks[0])
    final = ref["final_logits"].reshape(masks.shape)
    sure = np.abs(final) >= 1e-2
    assert (masks[sure] == ref["masks"].reshape(masks.shape)[sure]).all()
