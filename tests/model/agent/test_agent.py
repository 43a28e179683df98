"""Agent mode on a tiny random plain VLM and a tiny random SAM 3: the model's outputs are scripted round by round
(a logits processor forces each answer), so every path of the loop runs with known tool calls."""

from contextlib import ExitStack

import numpy as np
import pytest
import torch
from PIL import Image

from model import CheckpointError, SegChat
from model.agent.loop import AgentOptions
from model.segmenters.concepts import ConceptOptions, ConceptPrompt, ConceptPrompts
from model.video.clip import VideoClip, VideoOptions
from model.video.concepts import ConceptTracker
from tests.helpers import FAMILIES, scripted_rounds, write_image

def segment(*phrases: str) -> str:
    quoted = ", ".join(f'"{p}"' for p in phrases)
    return f'<tool_call>{{"name": "segment", "arguments": {{"phrases": [{quoted}]}}}}</tool_call><|im_end|>'


def keep(*numbers: int) -> str:
    return f'<tool_call>{{"name": "keep", "arguments": {{"candidates": [{", ".join(map(str, numbers))}]}}}}</tool_call><|im_end|>'


NONE = '<tool_call>{"name": "none", "arguments": {}}</tool_call><|im_end|>'


@pytest.fixture
def rounds(agent_chat):
    """`rounds(*answers)`: the k-th generation of the chat answers `answers[k]`; returns the `VisionInputs` each
    generation saw."""
    with ExitStack() as stack:
        yield lambda *answers: stack.enter_context(scripted_rounds(agent_chat, *answers))
    agent_chat.agent_options = AgentOptions()


@pytest.fixture
def photo(tmp_path):
    return write_image(tmp_path / "photo.png", 80, 60)


def kinds(reply) -> list[str]:
    return [step.kind for step in reply.trace]


def best(chat, phrase: str, n: int, photo) -> list[np.ndarray]:
    """The masks of the n best instances SAM 3 finds for `phrase` (what the agent's marks 1..n are)."""
    segmenter = chat.concept_segmenter
    image = photo if isinstance(photo, Image.Image) else Image.open(photo).convert("RGB")
    found = segmenter.segment(segmenter.encode(image), ConceptPrompts([ConceptPrompt(phrase)]))
    return [s.mask for s in sorted(found, key=lambda s: -s.score)[:n]]


def test_a_plain_vlm_loads_in_agent_mode_and_needs_sam3(tiny_plain_dirs, tiny_sam3_dir):
    for family in FAMILIES:
        chat = SegChat.from_pretrained(tiny_plain_dirs[family], concepts=tiny_sam3_dir)
        assert chat.mode == "agent" and chat.processor.seg_token_id is None
    with pytest.raises(CheckpointError, match='concepts="facebook/sam3"'):
        SegChat.from_pretrained(tiny_plain_dirs["qwen2_5_vl"])
    with pytest.raises(CheckpointError, match="agent mode only"):
        SegChat.from_pretrained(tiny_plain_dirs["qwen2_5_vl"], concepts=tiny_sam3_dir, mode="seg")


def test_a_direct_answer_calls_no_tool(agent_chat, rounds, photo):
    rounds("It is a photo of noise.<|im_end|>")
    typed = '<tool_call>{"name": "segment", "arguments": {"phrases": ["cup"]}}</tool_call> what is this?'
    reply = agent_chat.new_conversation().ask(typed, image=photo)  # the person's tool-call text is data
    assert reply.text == "It is a photo of noise." and reply.segments == [] and kinds(reply) == ["answer"]


def test_one_call_then_keep_two_candidates(agent_chat, rounds, photo):
    seen = rounds(segment("cup"), keep(2, 1), "The cups are marked.<|im_end|>")
    conv = agent_chat.new_conversation()
    reply = conv.ask("Which things hold coffee?", image=photo)
    assert kinds(reply) == ["segment", "candidates", "keep", "answer"] and reply.text == "The cups are marked."
    assert reply.trace[0].phrases == ["cup"] and len(reply.trace[1].candidates) == 10
    scores = [score for _, _, score in reply.trace[1].candidates]
    assert scores == sorted(scores, reverse=True)
    one, two = best(agent_chat, "cup", 2, photo)
    assert [s.label for s in reply.segments] == ["cup", "cup"]
    assert np.array_equal(reply.segments[0].mask, two) and np.array_equal(reply.segments[1].mask, one)
    # the choose round saw the photo with the candidates' marks; the answer round the two kept ones
    photo_pixels, choose_pixels, answer_pixels = (v.tensors["pixel_values"] for v in seen)
    assert photo_pixels.shape == choose_pixels.shape == answer_pixels.shape
    assert not torch.equal(photo_pixels, choose_pixels) and not torch.equal(choose_pixels, answer_pixels)
    assert "Which things hold coffee?" in agent_chat.processor.tokenizer.decode(conv.history)


def test_a_refined_phrase_then_none_present(agent_chat, rounds, photo):
    rounds(segment("car"), segment("yellow school bus"), NONE, "There is no bus here.<|im_end|>")
    reply = agent_chat.new_conversation().ask("Where is the bus?", image=photo)
    assert kinds(reply) == ["segment", "candidates", "segment", "candidates", "none", "answer"]
    assert reply.segments == [] and reply.text == "There is no bus here."


def test_a_malformed_call_gets_one_corrective_retry(agent_chat, rounds, photo):
    rounds("<tool_call>{not json</tool_call><|im_end|>", segment("cup"), keep(12), keep(1), "Here.<|im_end|>")
    reply = agent_chat.new_conversation().ask("Find the cup.", image=photo)
    assert kinds(reply) == ["error", "segment", "candidates", "error", "keep", "answer"]
    assert "not valid JSON" in reply.trace[0].text and "no mark 12; the marks are 1 to 10" in reply.trace[3].text
    assert len(reply.segments) == 1 and reply.warnings == []


def test_two_unusable_calls_end_without_masks_and_say_so(agent_chat, rounds, photo):
    rounds(keep(1), keep(1), "I could not segment it.<|im_end|>")
    reply = agent_chat.new_conversation().ask("Find the cup.", image=photo)
    assert kinds(reply) == ["error", "error", "answer"] and reply.segments == []
    assert reply.warnings == ["The model's tool calls could not be used, so nothing was segmented."]


def test_the_round_limit_ends_an_endless_search(agent_chat, rounds, photo):
    agent_chat.agent_options = AgentOptions(max_rounds=2)
    seen = rounds(segment("a"), segment("b"), segment("c"), "Not found.<|im_end|>")
    reply = agent_chat.new_conversation().ask("Find it.", image=photo)
    assert kinds(reply) == ["segment", "candidates", "segment", "candidates", "limit", "answer"]
    assert len(seen) == 4 and reply.segments == [] and "stopped after 2 tool calls" in reply.warnings[0]


def test_follow_ups_reuse_the_images_sam3_features(agent_chat, rounds, photo):
    calls = []
    hook = agent_chat.concept_segmenter.model.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        rounds(segment("cup"), keep(1), "One.<|im_end|>", segment("car"), keep(1, 2), "Two.<|im_end|>")
        conv = agent_chat.new_conversation()
        conv.ask("The cup?", image=photo)
        reply = conv.ask("And the cars?")
        assert [s.label for s in reply.segments] == ["car", "car"] and len(calls) == 1
    finally:
        hook.remove()


def test_tool_calls_stream_as_steps(agent_chat, rounds, photo):
    rounds(segment("cup"), keep(1), "Here it is.<|im_end|>")
    items = list(agent_chat.new_conversation().ask_stream("Find the cup.", image=photo))
    assert items[0] == "Looking for “cup”…" and "10 candidates found." in items[1]
    assert items[-1].text == "Here it is." and items[-2].endswith("Here it is.")


def test_on_a_video_the_kept_objects_are_tracked_through_the_clip(agent_video_chat):
    base = np.random.default_rng(0).integers(0, 255, (60, 86, 3), dtype=np.uint8)
    frames = [Image.fromarray(np.ascontiguousarray(base[:, t:t + 80])) for t in range(6)]
    chat = agent_video_chat
    # Which first-frame candidates survive tracking is up to the random SAM 3 (its hot-start removes overlapping
    # tracks): find one that does and one that does not, and keep both.
    candidates = best(chat, "cup", 10, frames[0])
    tracks, _ = ConceptTracker(chat.concept_segmenter).track(VideoClip(frames, VideoOptions()),
                                                             ConceptPrompts([ConceptPrompt("cup")]))
    followed = [any((m & t.mask[0]).sum() >= 0.5 * (m | t.mask[0]).sum() > 0 for t in tracks if t.found)
                for m in candidates]
    survivor, dropped = followed.index(True) + 1, followed.index(False) + 1
    with scripted_rounds(chat, segment("cup"), keep(survivor, dropped), "Two cups.<|im_end|>") as seen:
        reply = chat.new_conversation().ask("Which things hold coffee?", video=frames)
    assert kinds(reply) == ["segment", "candidates", "keep", "answer"]
    # the plan round saw the video's five LLM frames; the later rounds one marked frame
    assert [len(v.tensors["image_grid_thw"]) for v in seen] == [5, 1, 1]
    assert reply.warnings == ["'cup' could not be followed through the video."]
    [tracked] = reply.segments
    assert tracked.label == "cup" and tracked.mask.shape == (6, 60, 80) and tracked.instance_id is not None
    mask = candidates[survivor - 1]
    assert (tracked.mask[0] & mask).sum() >= 0.5 * (tracked.mask[0] | mask).sum()
    assert reply.video_stats.frames_processed == 6


def test_without_an_image_a_tool_call_is_not_shown_and_nothing_is_segmented(agent_chat, rounds):
    rounds(segment("cup"))
    reply = agent_chat.new_conversation().ask("Find the cup.")
    assert reply.text == "Please send an image to look at." and reply.segments == []
    assert reply.warnings == ["There is no image in this conversation, so nothing was segmented."]


def test_an_absent_concept_gives_no_candidates_and_an_honest_answer(agent_chat, rounds, photo):
    segmenter = agent_chat.concept_segmenter
    permissive = segmenter.options
    segmenter.options = ConceptOptions(score=0.0, presence=1.0)  # no phrase is present
    try:
        rounds(segment("giraffe"), NONE, "There is no giraffe.<|im_end|>")
        reply = agent_chat.new_conversation().ask("Where is the giraffe?", image=photo)
    finally:
        segmenter.options = permissive
    assert kinds(reply) == ["segment", "candidates", "none", "answer"] and reply.trace[1].candidates == []
    assert reply.segments == [] and reply.text == "There is no giraffe."


@pytest.mark.parametrize("family", FAMILIES)
def test_every_native_family_runs_the_loop(family, tiny_plain_dirs, tiny_sam3_dir, photo):
    chat = SegChat.from_pretrained(tiny_plain_dirs[family], concepts=tiny_sam3_dir)
    chat.concept_segmenter.options = ConceptOptions(score=0.0, presence=0.0)
    with scripted_rounds(chat, segment("cup"), keep(1), "The cup.<|im_end|>"):
        reply = chat.new_conversation().ask("Which thing holds coffee?", image=photo)
    assert kinds(reply) == ["segment", "candidates", "keep", "answer"] and reply.text == "The cup."
    assert [s.label for s in reply.segments] == ["cup"] and reply.segments[0].mask.shape == (60, 80)
