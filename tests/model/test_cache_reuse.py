"""Follow-ups continue the language model's cache of their conversation (`model.context_cache`), on tiny random
models of every family: the same answers, `[SEG]` states and masks as reading the whole history again, only the new
tokens prefilled, the vision tower once per picture, and the cache dropped when it must be."""

import copy
import gc
import weakref
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from chat import handlers
from chat.session import Session, close_session
from model import SegChat
from model.regions import Region
from tests.helpers import FAMILIES, ScriptedAnswer, script, write_image

IMAGE = np.random.default_rng(5).integers(0, 255, (61, 97, 3), dtype=np.uint8)
TALL = np.random.default_rng(6).integers(0, 255, (120, 40, 3), dtype=np.uint8)  # other M-RoPE offsets
FREE = None  # a turn answered by the model itself (greedy)
UNDO = "undo"
# Three turns (a [SEG] answer, a free text-only follow-up, an answer whose last token is [SEG], which needs one more
# forward for its state), an undo through the app's session, and one more turn from the rewound conversation.
TURNS = [("Segment the apple.", "It is <p>the apple</p> [SEG].<|im_end|>"),
         ("Which one is the ripest?", FREE),
         ("And the one beside it?", "Here: [SEG]"),
         UNDO,
         ("Segment the stem instead.", "<p>The stem</p> [SEG].<|im_end|>")]


@contextmanager
def traced(chat: SegChat):
    """Records, per generation: its prompt's length, the tokens its first forward read (the prefill), the tokens
    the conversation's cache held before it, the [SEG] states, and what the vision tower encoded (in pictures of
    IMAGE's size)."""
    trace = SimpleNamespace(prompts=[], prefilled=[], cached=[], states=[], encoded=[])
    starting = []

    def first_forward(module, args, kwargs):
        if starting:
            starting.clear()
            trace.prefilled.append(kwargs["input_ids"].shape[1])

    def count(module, args, kwargs):
        trace.encoded[-1] += (args[0] if args else kwargs["pixel_values"]).shape[0] / picture

    original = chat.generate

    def generate(prompt_ids, vision, *args, context=None, **kwargs):
        starting.append(True)
        trace.encoded.append(0)
        trace.prompts.append(len(prompt_ids))
        trace.cached.append(context.tokens if context is not None else 0)
        new_ids, states = original(prompt_ids, vision, *args, context=context, **kwargs)
        trace.states.append(states)
        return new_ids, states

    picture = chat.processor.encode_images([Image.fromarray(IMAGE)]).tensors["pixel_values"].shape[0]
    hooks = [chat.model.vlm.register_forward_pre_hook(first_forward, with_kwargs=True),
             chat.model.vision_tower().register_forward_pre_hook(count, with_kwargs=True)]
    chat.generate = generate
    try:
        yield trace
    finally:
        del chat.generate
        for hook in hooks:
            hook.remove()


@contextmanager
def cache_setting(chat: SegChat, reuse: bool):
    """The chat with the cache on or off for the block, its options as they were afterwards."""
    chat.reuse_cache = reuse
    try:
        yield
    finally:
        chat.generate_options, chat.reuse_cache = {}, True


def answering(chat: SegChat, answer: str | None) -> None:
    """The next turns answer `answer` (markup; a last [SEG] ends the answer there), or freely when None."""
    chat.generate_options = {} if answer is None else {"logits_processor": [ScriptedAnswer(script(chat, answer))]}
    chat.limits.max_new_tokens = len(script(chat, answer)) if answer and answer.endswith("[SEG]") else 24


def session_transcript(chat: SegChat, reuse: bool, tmp_path):
    """TURNS through the app's session; what each turn answered and segmented, and the trace."""
    chat.reuse_cache = reuse
    tmp_path.mkdir()
    session = Session(chat, root=tmp_path)
    image = tmp_path / "apple.png"
    Image.fromarray(IMAGE).save(image)
    answers, masks, prompts = [], [], []
    try:
        with traced(chat) as trace:
            for step in TURNS:
                if step == UNDO:
                    handlers.undo(session)
                    continue
                text, answer = step
                answering(chat, answer)
                list(handlers.ask(session, text, None if session.media else [image]))
                turn = session.turns[-1]
                assert turn.error is None, turn.error
                answers.append(session.conversation.last_reply.token_ids)
                masks.append(turn.result.masks if turn.result else [])
                prompts.append(len(session.conversation.history))
    finally:
        chat.generate_options, chat.reuse_cache = {}, True
        close_session(session)
    return SimpleNamespace(answers=answers, masks=masks, trace=trace, history=session.conversation.history)


def assert_same_states(ours: list, reference: list) -> None:
    assert [s is None for s in ours] == [s is None for s in reference]
    for a, b in zip(ours, reference):
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_follow_ups_answer_the_same_from_the_cache_and_encode_the_image_once(own_chats, family, tmp_path):
    chat = own_chats(family)
    reused = session_transcript(chat, True, tmp_path / "on")
    recomputed = session_transcript(chat, False, tmp_path / "off")

    assert reused.answers == recomputed.answers
    assert reused.answers[2][-1] == chat.processor.seg_token_id  # the state from one more forward
    assert_same_states(reused.trace.states, recomputed.trace.states)
    assert [len(m) for m in reused.masks] == [1, 0, 1, 1]
    for ours, reference in zip(reused.masks, recomputed.masks):
        assert all(np.array_equal(a, b) for a, b in zip(ours, reference))

    # Without reuse every turn reads its whole prompt; with it, only what the cache lacks, after the first.
    assert recomputed.trace.prefilled == recomputed.trace.prompts == reused.trace.prompts
    trace = reused.trace
    reused_tokens = [p - f for p, f in zip(trace.prompts, trace.prefilled)]
    assert reused_tokens[0] == 0 and all(0 < r <= c for r, c in zip(reused_tokens[1:], trace.cached[1:]))
    assert all(r > trace.prompts[0] for r in reused_tokens[1:])  # the first prompt, its image included
    # After the undo the cache still held the undone turn: it was cropped to the history before it.
    assert reused_tokens[3] < trace.cached[3]
    assert trace.encoded == [1, 0, 0, 0] and recomputed.trace.encoded == [1, 1, 1, 1]  # the vision tower


@pytest.mark.parametrize("family", FAMILIES)
def test_region_follow_ups_show_only_what_they_add(own_chats, family):
    """A follow-up with regions continues the cache: the marked picture (Qwen) is the only one encoded, and
    `<vp>` regions (InternVL) read the features of the image encoded in the first turn."""
    chat = own_chats(family)
    results = {}
    for reuse in (True, False):
        conv = chat.new_conversation()
        with cache_setting(chat, reuse):
            with traced(chat) as trace:
                answering(chat, "It is <p>this</p> [SEG].<|im_end|>")
                conv.ask("Segment the apple.", image=IMAGE)
                conv.ask("What is region 1?", regions=[Region(box=(10, 8, 50, 40))])
                answering(chat, FREE)
                conv.ask("And region 2, compared with region 1?", regions=[Region(box=(50, 20, 90, 60))])
                conv.ask("Which is larger?")
        results[reuse] = (conv.history, trace)
    (history, trace), (reference_history, reference) = results[True], results[False]
    assert history == reference_history
    assert_same_states(trace.states, reference.states)
    assert reference.prefilled == reference.prompts == trace.prompts
    assert all(f < p for f, p in zip(trace.prefilled[1:], trace.prompts[1:]))
    marks = not chat.processor.takes_region_tokens  # each region turn adds a marked picture
    assert trace.encoded == ([1, 1, 1, 0] if marks else [1, 0, 0, 0])
    assert reference.encoded == ([1, 2, 3, 3] if marks else [1, 1, 1, 1])  # the image and every marked one again


def test_copies_of_a_conversation_never_read_each_others_pictures(own_chats):
    """Two copies (the app's undo keeps them) mark different regions on the same image: equal prompt ids, other
    pictures. Each copy's follow-up reads its own."""
    chat = own_chats("qwen2_5_vl")
    states = {}
    for reuse in (True, False):
        answering(chat, "It is <p>this</p> [SEG].<|im_end|>")
        with cache_setting(chat, reuse):
            conv = chat.new_conversation()
            conv.ask("Segment it.", image=IMAGE)
            before = copy.copy(conv)
            conv.ask("What is region 1?", regions=[Region(box=(4, 4, 40, 30))])
            other = copy.copy(before)
            other.ask("What is region 1?", regions=[Region(box=(50, 25, 90, 55))])
            with traced(chat) as trace:
                conv.ask("And now?")
        states[reuse] = trace
    assert 0 < states[True].prefilled[0] < states[True].prompts[0]
    assert_same_states(states[True].states, states[False].states)


@pytest.mark.parametrize("family", ["internvl", "qwen3_vl"])
def test_video_follow_ups_continue_the_cache(own_chats, family):
    """A video's LLM frames are several pictures; a region follow-up adds them again, with the marks."""
    chat = own_chats(family)
    frames = [np.full((48, 64, 3), 30 + 40 * i, np.uint8) for i in range(4)]
    results = {}
    for reuse in (True, False):
        conv = chat.new_conversation()
        with cache_setting(chat, reuse):
            with traced(chat) as trace:
                answering(chat, FREE)
                conv.ask("What happens?", video=frames, llm_frames=2)
                conv.ask("And then?")
                conv.ask("Where does region 1 go?", regions=[Region(frame=1, box=(4, 4, 30, 30))])
        results[reuse] = (conv.history, trace)
    (history, trace), (reference_history, reference) = results[True], results[False]
    assert history == reference_history
    assert reference.prefilled == reference.prompts == trace.prompts
    assert all(f < p for f, p in zip(trace.prefilled[1:], trace.prompts[1:]))
    frames_once = reference.encoded[0]
    assert frames_once > 0
    assert trace.encoded == [frames_once, 0, frames_once]  # the marked frames only
    assert reference.encoded == [frames_once, frames_once, 2 * frames_once]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_interleaved_conversations_keep_their_own_m_rope_positions(own_chats, family):
    """Qwen-VL keeps `rope_deltas` on the model: a turn of another conversation (another image shape, other
    offsets) in between must not shift the positions of a continued conversation."""
    chat = own_chats(family)
    answer = "It is <p>this</p> [SEG].<|im_end|>"
    results = {}
    for reuse in (True, False):
        wide, tall = chat.new_conversation(), chat.new_conversation()
        with cache_setting(chat, reuse):
            with traced(chat) as trace:
                answering(chat, answer)
                wide.ask("Segment it.", image=IMAGE)
                tall.ask("Segment it.", image=TALL)
                wide.ask("And the other one?")
                tall.ask("And the other one?")
                answering(chat, FREE)
                wide.ask("Why?")
        results[reuse] = ([wide.history, tall.history], trace.states)
    assert results[True][0] == results[False][0]
    assert_same_states(results[True][1], results[False][1])


@pytest.mark.parametrize("family", FAMILIES)
def test_a_last_seg_state_read_from_the_cache_equals_a_full_forward(own_chats, family):
    chat = own_chats(family)
    answering(chat, "Here: [SEG]")
    try:
        vision = chat.processor.encode_images([Image.fromarray(IMAGE)])
        prompt = chat.processor.conversation_start() + chat.processor.user_turn("Segment it.", vision)
        new_ids, states = chat.generate(prompt, vision)
    finally:
        chat.generate_options = {}
    inputs = chat.processor.model_inputs(torch.tensor([prompt + new_ids]), vision, chat.device, chat.model.vlm.dtype)
    with torch.no_grad(), chat.model.seg_capture(chat.processor.seg_token_id, skip_first=False) as full:
        chat.model.vlm(**inputs)
    assert new_ids[-1] == chat.processor.seg_token_id
    torch.testing.assert_close(states[-1:], full.states[-1][-1:], atol=1e-5, rtol=1e-4)


def test_new_media_start_a_fresh_cache(own_chats):
    """Another picture of the same size asked about in the same words has the same prompt ids: the cache must not
    serve them."""
    chat = own_chats("qwen3_vl")
    answering(chat, "It is <p>this</p> [SEG].<|im_end|>")
    try:
        conv = chat.new_conversation()
        conv.ask("Segment it.", image=IMAGE)
        conv.ask("And again?")
        with traced(chat) as trace:
            conv.ask("Segment it.", image=IMAGE[::-1])
        with traced(chat) as reference:
            chat.new_conversation().ask("Segment it.", image=IMAGE[::-1])
    finally:
        chat.generate_options = {}
    assert trace.prefilled == trace.prompts == reference.prompts and trace.encoded == [1]
    assert_same_states(trace.states, reference.states)
    assert conv.context.ids == conv.history[:conv.context.tokens]


def test_a_stopped_stream_leaves_the_cache_consistent_with_the_history(own_chats):
    chat = own_chats("qwen3_vl")
    answering(chat, "It is <p>this</p> [SEG].<|im_end|>")
    try:
        conversations = {}
        for reuse in (True, False):
            chat.reuse_cache = reuse
            conv = conversations[reuse] = chat.new_conversation()
            conv.ask("Segment it.", image=IMAGE)
            stream = conv.ask_stream("And again?")
            next(stream)
            stream.close()  # nothing is recorded; the cache holds more than the history until the next turn
            with traced(chat) as trace:
                conv.ask("And the other one?")
            conversations[reuse] = (conv, trace)
    finally:
        chat.generate_options, chat.reuse_cache = {}, True
    (conv, trace), (reference, recomputed) = conversations[True], conversations[False]
    assert conv.history == reference.history
    assert_same_states(trace.states, recomputed.states)
    assert 0 < trace.prompts[0] - trace.prefilled[0] <= trace.cached[0]
    assert conv.context.ids == conv.history[:conv.context.tokens]


def test_a_context_over_the_limit_is_not_kept(own_chats):
    chat = own_chats("internvl")
    answering(chat, FREE)
    try:
        conv = chat.new_conversation()
        conv.ask("Describe it.", image=IMAGE)
        assert conv.context.tokens > 0
        chat.limits.max_cached_tokens = conv.context.tokens + 10  # room for a few tokens more, not for a turn
        conv.ask("More?")
        assert conv.context.tokens == 0 and conv.context.cache is None
        with traced(chat) as trace:
            conv.ask("Why?")
        assert trace.cached == [0] and trace.prefilled == trace.prompts
    finally:
        chat.limits.max_cached_tokens = 8192
        chat.generate_options = {}


def test_the_caches_of_all_conversations_stay_under_the_memory_cap(own_chats):
    chat = own_chats("qwen2_5_vl")
    answering(chat, "Yes.<|im_end|>")
    a, b, c = (chat.new_conversation() for _ in range(3))
    found = chat.limits.max_cache_mib
    try:
        for conv in (a, b):
            conv.ask("Describe it.", image=IMAGE)
        one_turn = a.context.nbytes
        a.ask("Is it red?")  # a is now the most recently continued
        cap = a.context.nbytes + one_turn + 1  # a and one more conversation of one turn
        chat.limits.max_cache_mib = cap / 2**20
        c.ask("Describe it.", image=IMAGE)
        assert [conv.context.tokens > 0 for conv in (a, b, c)] == [True, False, True]  # b: continued longest ago
        with traced(chat) as trace:
            b.ask("Is it red?")
        assert trace.cached == [0] and trace.prefilled == trace.prompts  # b read its history again
        assert [conv.context.tokens > 0 for conv in (a, b, c)] == [False, True, True]  # now a was the oldest
        assert 0 < chat.cache_budget.nbytes <= cap
    finally:
        chat.limits.max_cache_mib = found
        chat.generate_options = {}


def test_closed_sessions_release_their_caches(own_chats, tmp_path):
    chat = own_chats("qwen2_5_vl")
    answering(chat, "It is <p>this</p> [SEG].<|im_end|>")
    image = write_image(tmp_path / "a.png")
    caches = []
    try:
        for k in range(20):
            session = Session(chat, root=tmp_path)
            list(handlers.ask(session, "Segment it.", [image]))
            list(handlers.ask(session, "And again?", None))
            assert session.conversation.context.tokens > 0
            caches.append(weakref.ref(session.conversation.context.cache))
            close_session(session)
            assert session.conversation.context.cache is None
    finally:
        chat.generate_options = {}
    gc.collect()
    assert all(cache() is None for cache in caches)
