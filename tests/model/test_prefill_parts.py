"""A prompt showing several pictures (a video's LLM frames) is read in parts that each end after a picture
(`Limits.prefill_part_tokens`): the vision tower and the language model see one part at a time, and the answers,
`[SEG]` states and masks are those of reading the prompt in one pass."""

from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model import SegChat
from model.context_cache import picture_parts
from tests.helpers import FAMILIES, ScriptedAnswer, script

FRAMES = [np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8) for i in range(4)]
PAD = 9  # a placeholder id in the unit cases


def test_picture_parts_cut_after_pictures_within_the_budget():
    # text 0-1, picture A at 2-4, text 5, picture B at 6-8, picture C at 9-11, text 12-13
    ids = [1, 1, PAD, PAD, PAD, 1, PAD, PAD, PAD, PAD, PAD, PAD, 1, 1]
    runs = [[PAD] * 3] * 3
    assert picture_parts(ids, 0, runs, {PAD}, max_tokens=5) == [(5, 1), (9, 1)]
    assert picture_parts(ids, 0, runs, {PAD}, max_tokens=9) == [(9, 2)]  # A and B fit together, C does not
    assert picture_parts(ids, 0, runs, {PAD}, max_tokens=100) == []  # one part: generate reads it all
    assert picture_parts(ids, 0, runs, {PAD}, max_tokens=1) == [(5, 1), (9, 1)]  # a picture alone may be longer
    assert picture_parts(ids, 6, runs[1:], {PAD}, max_tokens=1) == [(9, 1)]  # from where the cache ends
    assert picture_parts(ids, 0, runs[:2], {PAD}, max_tokens=1) == []  # placeholders the runs do not explain


@contextmanager
def reading(chat: SegChat, part_tokens: int):
    """The chat reading prompts in parts of `part_tokens` (0: one pass) for the block; records the pictures each
    vision-tower call encoded (its input rows) and the tokens each language-model forward read."""
    trace = SimpleNamespace(vision_rows=[], read=[])
    hooks = [chat.model.vision_tower().register_forward_pre_hook(
                 lambda m, args, kwargs: trace.vision_rows.append((args[0] if args else kwargs["pixel_values"]
                                                                   ).shape[0]), with_kwargs=True),
             chat.model.language_model().register_forward_pre_hook(
                 lambda m, args, kwargs: trace.read.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)]
    before, chat.limits.prefill_part_tokens = chat.limits.prefill_part_tokens, part_tokens
    try:
        yield trace
    finally:
        chat.limits.prefill_part_tokens = before
        chat.generate_options = {}
        for hook in hooks:
            hook.remove()


def video_conversation(chat: SegChat, part_tokens: int, reuse: bool):
    """A video turn answering two objects, then a free follow-up; what it answered, its [SEG] states and masks."""
    chat.reuse_cache = reuse
    conv = chat.new_conversation()
    answer = script(chat, "Here: <p>the first</p> [SEG] and <p>the second</p> [SEG].<|im_end|>")
    states = []
    original = chat.generate

    def generate(*args, **kwargs):
        new_ids, seg_states = original(*args, **kwargs)
        states.append(seg_states)
        return new_ids, seg_states

    chat.generate = generate
    try:
        with reading(chat, part_tokens) as trace:
            chat.generate_options = {"logits_processor": [ScriptedAnswer(answer)]}
            chat.limits.max_new_tokens = len(answer)
            reply = conv.ask("Segment the two things.", video=FRAMES, llm_frames=4)
            chat.generate_options = {}
            chat.limits.max_new_tokens = 24
            conv.ask("What are they doing?")
    finally:
        del chat.generate
        chat.reuse_cache, chat.limits.max_new_tokens = True, 24
    masks = [np.asarray(segment.mask) for segment in reply.segments]
    return SimpleNamespace(history=conv.history, states=states, masks=masks, trace=trace)


@pytest.mark.parametrize(("family", "reuse"), [(family, True) for family in FAMILIES] + [("qwen3_vl", False)])
def test_a_video_prompt_read_a_frame_at_a_time_answers_as_in_one_pass(own_chats, family, reuse):
    chat = own_chats(family)
    one_pass = video_conversation(chat, 0, reuse)
    parts = video_conversation(chat, 1, reuse)

    assert parts.history == one_pass.history  # the scripted turn and the free follow-up, token for token
    assert len(parts.masks) == 2
    for ours, reference in zip(parts.states, one_pass.states):
        assert (ours is None) == (reference is None)
        if ours is not None:
            torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)
    for ours, reference in zip(parts.masks, one_pass.masks):
        assert np.array_equal(ours, reference)

    # In one pass the vision tower encodes the four frames at once; in parts, a frame per call.
    picture = one_pass.trace.vision_rows[0] // 4
    assert one_pass.trace.vision_rows[0] == 4 * picture
    first_turn = parts.trace.vision_rows[:4]
    assert first_turn == [picture] * 4
    # The first turn's prompt: three parts of one frame each, then the part generate reads (the last frame, the
    # question): four forwards of several tokens that add up to the one-pass prompt, then single-token steps.
    assert sum(parts.trace.read[:4]) == one_pass.trace.read[0]
    assert min(parts.trace.read[:4]) > 1 and parts.trace.read[4] == 1
    if not reuse:  # the follow-up reads the whole history again, in parts too
        assert parts.trace.vision_rows[4:] == [picture] * 4
