"""Region prompts (`<vp>`) against the official code: every case of tests/fixtures/oracle/sa2va-internvl-vp, run
on the shared InternVL oracle checkpoint through `predict_forward(..., mask_prompts=...)` and through
`conv.ask(..., regions=...)`. Tolerances are the InternVL oracle's (see that folder's README)."""

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model import SegChat
from model.regions import Region
from model.sa2va.official import OfficialOutput, predict_forward
from tests.helpers import shared_path

pytestmark = pytest.mark.slow

FOLDER = Path(__file__).resolve().parents[2] / "fixtures" / "oracle" / "sa2va-internvl-vp"
INDEX = json.loads((FOLDER / "vp_cases.json").read_text())
CASES = {case["name"]: case for case in INDEX["cases"]}


@cache
def chat() -> SegChat:
    return SegChat.from_pretrained(shared_path("oracle", INDEX["checkpoint"]), device="cpu", dtype="fp32")


def reference(case: str, name: str) -> np.ndarray:
    path = FOLDER / "reference" / case / name
    if path.suffix == ".npz":
        with np.load(path) as z:
            return z[z.files[0]]
    return np.load(path)


def inputs(case: str) -> tuple[Image.Image, np.ndarray]:
    spec = CASES[case]
    with np.load(FOLDER / spec["mask_prompts"]) as z:
        masks = z[spec["mask_prompts_key"]].astype(bool)
    return Image.open(FOLDER / spec["image"]).convert("RGB"), masks


@cache
def official(case: str) -> OfficialOutput:
    image, masks = inputs(case)
    sc = chat()
    with sc.lock:
        return predict_forward(sc.model, sc.processor, image=image, text=CASES[case]["text"], mask_prompts=[masks],
                               segmenter=sc.segmenter)


@pytest.mark.parametrize("case", CASES)
def test_region_cells_and_prompt_ids_equal_the_official(case):
    sc = chat()
    _, masks = inputs(case)
    cells = np.stack([sc.processor.family.region_cells(m).numpy() for m in masks])
    assert np.array_equal(cells, reference(case, "region_masks_16.npy").astype(bool))
    assert official(case).prompt_ids == reference(case, "prompt_input_ids.npy").reshape(-1).tolist()


@pytest.mark.parametrize("case", CASES)
def test_answer_states_and_masks_equal_the_official(case):
    out = official(case)
    assert out.generated_ids == reference(case, "generated_ids.npy").reshape(-1).tolist()
    assert out.prediction == (FOLDER / "reference" / case / "prediction.txt").read_text()
    expected = reference(case, "seg_hidden_states.npy")
    assert out.seg_states.shape == expected.shape
    assert torch.allclose(out.seg_states.float(), torch.from_numpy(expected).float(), atol=1e-4)
    logits = reference(case, "final_mask_logits.npy")
    masks = np.stack(out.masks)
    assert masks.shape == reference(case, "pred_masks.npz").shape
    sure = np.abs(logits) >= 1e-3  # pixels at the threshold may flip on rounding
    assert np.array_equal(masks[sure], reference(case, "pred_masks.npz").astype(bool)[sure])


@pytest.mark.parametrize("case", ["one_region", "two_regions"])
def test_a_conversation_turn_sends_the_official_region_block(case):
    """conv.ask adds SegChat's system turn, so the prompts differ before the image; from the image block on, the
    region block and the features in it are the official ones."""
    sc = chat()
    image, masks = inputs(case)
    conv = sc.new_conversation()
    question = CASES[case]["text"].replace("<image>", "")
    conv.ask(question, image=image, regions=[Region(mask=m) for m in masks])
    official_ids = official(case).prompt_ids
    start = sc.processor.tokenizer.convert_tokens_to_ids("<img>")
    tail = official_ids[official_ids.index(start):]
    ours = conv.history[conv.history.index(start):]
    assert ours[:len(tail)] == tail
