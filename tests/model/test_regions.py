"""Regions in a turn (`conv.ask(..., regions=[Region(...)])`) on tiny random models of every family: the masks
they become, how they reach the language model (`<vp>` runs on InternVL Sa2VA checkpoints, numbered marks on the
others), numbering across turns, and every bad region refused with the conversation unchanged."""

import copy

import numpy as np
import pytest
import torch

from model import InputError
from model.media.masks import VideoMask
from model.media.render import palette
from model.regions import Region, drawn_mask
from tests.helpers import FAMILIES, scripted_rounds

H, W = 72, 112
IMAGE = np.random.default_rng(3).integers(0, 255, (H, W, 3), dtype=np.uint8)
ANSWER = "It is <p>this</p> [SEG].<|im_end|>"


def block(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def ids_of(chat, token: str) -> int:
    return chat.processor.tokenizer.convert_tokens_to_ids(token)


def test_only_internvl_sa2va_checkpoints_take_region_tokens(tiny_chats):
    assert {f: tiny_chats[f].processor.takes_region_tokens for f in FAMILIES} == {
        "internvl": True, "qwen2_5_vl": False, "qwen3_vl": False}


@pytest.mark.parametrize("family", FAMILIES)
def test_clicks_and_boxes_become_sam2_masks_and_masks_are_kept_as_drawn(tiny_chats, family):
    chat = tiny_chats[family]
    conv = chat.new_conversation()
    drawn = block(10, 20, 40, 70)
    with scripted_rounds(chat, ANSWER):
        reply = conv.ask("What are region 1, region 2 and region 3?", image=IMAGE, regions=[
            Region(points=[(30, 25)]), Region(box=(5, 8, 60, 50)), Region(mask=drawn)])
    assert [s.label for s in reply.regions] == ["region 1", "region 2", "region 3"]
    features = conv.image_features()
    expected = [chat.segmenter.refine(features, [(30.0, 25.0)], [1]),
                chat.segmenter.refine(features, [], [], (5, 8, 60, 50))]
    for segment, mask in zip(reply.regions, expected):
        assert segment.mask.shape == (H, W)
        assert np.array_equal(segment.mask, mask) if mask.any() else segment.mask.any()
    assert np.array_equal(reply.regions[2].mask, drawn)
    assert len(reply.segments) == 1  # the answer's own [SEG] mask, as usual


def test_internvl_regions_are_vp_runs_filled_with_the_thumbnail_features_under_the_mask(tiny_chats):
    chat = tiny_chats["internvl"]
    family = chat.processor.family
    regions = [block(0, 0, 36, 56), block(36, 56, 72, 112)]  # the top-left and bottom-right quarters
    conv = chat.new_conversation()
    filled = []
    language_model = chat.model.language_model()

    def keep_inputs(module, args, kwargs):
        if kwargs["inputs_embeds"].shape[1] > 1:  # the prefill, not a decoding step
            filled.append(kwargs["inputs_embeds"][0].detach().clone())

    hook = language_model.register_forward_pre_hook(keep_inputs, with_kwargs=True)
    try:
        with scripted_rounds(chat, ANSWER) as seen:
            conv.ask("Compare region 1 with region 2.", image=IMAGE, regions=[Region(mask=m) for m in regions])
    finally:
        hook.remove()
    prompt = conv.history
    context, start, end = ids_of(chat, "<IMG_CONTEXT>"), ids_of(chat, "<vp>"), ids_of(chat, "</vp>")
    starts = [i for i, t in enumerate(prompt) if t == start]
    runs = [prompt[s + 1:prompt.index(end, s)] for s in starts]
    side = int(family.tokens_per_tile ** 0.5)
    assert [len(run) for run in runs] == [side * side // 4] * 2 and all(set(r) == {context} for r in runs)
    note = chat.processor.tokenizer.decode(prompt[prompt.index(ids_of(chat, "</img>")) + 1:starts[0] + 1])
    assert note == "\nThere are 2 part regions in the picture: region1<vp>"

    vision = seen[0]
    with torch.no_grad():
        tiles = chat.model.vlm.model.get_image_features(pixel_values=vision.tensors["pixel_values"],
                                                        return_dict=True).pooler_output
    thumbnail = tiles[-1].reshape(side, side, -1)
    embeds = filled[0]
    for s, run, (rows, cols) in zip(starts, runs, [(slice(0, side // 2), slice(0, side // 2)),
                                                   (slice(side // 2, side), slice(side // 2, side))]):
        expected = thumbnail[rows, cols].reshape(-1, thumbnail.shape[-1])
        assert torch.allclose(embeds[s + 1:s + 1 + len(run)], expected, atol=1e-6)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_other_models_see_the_image_with_the_regions_marks(tiny_chats, monkeypatch, family):
    chat = tiny_chats[family]
    pictures = []
    encode = chat.processor.encode_images
    monkeypatch.setattr(chat.processor, "encode_images", lambda images, **kw: pictures.extend(images) or
                        encode(images, **kw))
    region = block(20, 30, 60, 90)
    conv = chat.new_conversation()
    with scripted_rounds(chat, ANSWER) as seen:
        conv.ask("What is region 1?", image=IMAGE, regions=[Region(mask=region)])
    original, marked = (np.asarray(p) for p in pictures)
    assert np.array_equal(original, IMAGE)
    assert seen[0].runs == chat.processor.encode_images([pictures[1]]).runs  # the model sees the marked picture
    colour = np.array(palette(1)[0], dtype=float)
    assert np.array_equal(marked[~region], IMAGE[~region])  # nothing drawn outside the region
    assert np.array_equal(marked[25, 35], np.rint(IMAGE[25, 35] * 0.5 + colour * 0.5))  # tinted inside
    assert np.array_equal(marked[20, 50], colour)  # its outline
    label = marked[35:47, 52:69]  # the mark "R1", white on the region's colour, at the centre of its box
    assert (label == colour).all(-1).sum() > 40 and (label >= 200).all(-1).sum() >= 12
    note = chat.processor.tokenizer.decode(conv.history)
    assert "Marks show the regions: region 1 is marked R1." in note


@pytest.mark.parametrize("family", FAMILIES)
def test_follow_ups_number_regions_on_and_can_refer_to_earlier_ones(tiny_chats, family):
    chat = tiny_chats[family]
    conv = chat.new_conversation()
    with scripted_rounds(chat, ANSWER, ANSWER, ANSWER) as seen:
        conv.ask("What is region 1?", image=IMAGE, regions=[Region(mask=block(0, 0, 30, 30))])
        second = conv.ask("Is region 2 bigger than region 1?", regions=[Region(box=(40, 20, 100, 70))])
        third = conv.ask("Segment what region 2 is used for.")
    assert [s.label for s in second.regions] == ["region 2"] and third.regions == []
    assert len(third.segments) == 1
    text = chat.processor.tokenizer.decode(conv.history)
    if chat.processor.takes_region_tokens:
        assert "region2<vp>" in text and len(seen[2].regions) == 2
    else:
        assert "region 2 is marked R2" in text and len(seen[1].runs) == 2  # the first picture, then the marked one
        assert seen[2].runs == seen[1].runs
    with pytest.raises(InputError, match="mentions region 3, but this conversation has regions 1 to 2"):
        conv.ask("And region 3?")
    conv.ask("A new picture.", image=IMAGE)  # new media starts the numbering again
    with pytest.raises(InputError, match="has no regions"):
        conv.ask("What about region 1?")


BAD_REGIONS = {
    "point outside": ([Region(points=[(W + 5, 10)])], "outside the image"),
    "negative point": ([Region(points=[(-1, 10)])], "outside the image"),
    "nan point": ([Region(points=[(float("nan"), 10)])], "outside the image"),
    "degenerate box": ([Region(box=(10, 10, 10, 40))], "x0 < x1"),
    "box outside": ([Region(box=(10, 10, W + 50, 40))], "inside the image"),
    "empty mask": ([Region(mask=np.zeros((H, W), bool))], "mask is empty"),
    "mask of the wrong size": ([Region(mask=np.ones((H, W + 1), bool))], "must match the image"),
    "nothing drawn": ([Region()], "is empty"),
    "mask with clicks": ([Region(points=[(3, 3)], mask=np.ones((H, W), bool))], "a mask alone"),
    "only exclude clicks": ([Region(points=[(3, 3)], labels=[0])], "click on the object"),
    "labels mismatch": ([Region(points=[(3, 3), (4, 4)], labels=[1])], "one label per point"),
    "frame on an image": ([Region(points=[(3, 3)], frame=2)], "names a frame"),
    "too many": ([Region(points=[(3, 3)])] * 9, "at most 8"),
    "not a region": (["region 1"], "not a Region"),
}


@pytest.fixture(scope="module")
def region_conversation(tiny_chats):
    """A conversation with one region; each case works on a shallow copy (as the app's undo keeps one)."""
    chat = tiny_chats["internvl"]
    conv = chat.new_conversation()
    with scripted_rounds(chat, ANSWER):
        conv.ask("What is region 1?", image=IMAGE, regions=[Region(points=[(10, 10)])])
    return conv


@pytest.mark.parametrize("case", BAD_REGIONS)
def test_bad_regions_are_refused_and_the_conversation_is_unchanged(tiny_chats, region_conversation, case):
    chat = tiny_chats["internvl"]
    conv = copy.copy(region_conversation)
    history, regions_before, media, vision = list(conv.history), list(conv.regions), conv.media, conv.media.vision
    regions, message = BAD_REGIONS[case]
    with pytest.raises(InputError, match=message):
        conv.ask("What is it?", regions=regions)
    assert conv.history == history and conv.media is media and conv.media.vision is vision
    assert len(conv.regions) == len(regions_before) and all(a is b for a, b in zip(conv.regions, regions_before))
    with scripted_rounds(chat, ANSWER):
        assert conv.ask("Still there?").text  # still usable


def test_regions_need_an_image(tiny_chats):
    conv = tiny_chats["qwen3_vl"].new_conversation()
    with pytest.raises(InputError, match="no image"):
        conv.ask("What is region 1?", regions=[Region(points=[(1, 1)])])
    with pytest.raises(InputError, match="has no regions"):
        conv.ask("What is region 1?", image=IMAGE)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_copy_taken_before_a_region_turn_still_answers_as_before(tiny_chats, family):
    """The app's undo keeps a shallow copy of the conversation: a region turn must not change what it holds."""
    chat = tiny_chats[family]
    conv = chat.new_conversation()
    with scripted_rounds(chat, ANSWER, ANSWER, ANSWER) as seen:
        conv.ask("Look.", image=IMAGE)
        before = copy.copy(conv)
        conv.ask("What is region 1?", regions=[Region(box=(10, 10, 50, 50))])
        again = before.ask("And now?")
    assert again.regions == [] and seen[2].runs == seen[0].runs and seen[2].regions == seen[0].regions == []


# ------------------------------------------------------------------------------------------ regions on a video

FRAMES = [np.random.default_rng(10 + t).integers(0, 255, (H, W, 3), dtype=np.uint8) for t in range(6)]


@pytest.fixture
def tracking(monkeypatch):
    """Records what the SAM2 video sessions were prompted with (frame, masks) and every tracked frame's output."""
    from model.video.session import TrackingSession

    record = {"prompts": [], "tracked": []}
    prompt_masks, track = TrackingSession.prompt_masks, TrackingSession.track

    def prompting(session, t, features, masks):
        record["prompts"].append((t, masks.clone()))
        return prompt_masks(session, t, features, masks)

    def tracking_frame(session, t, pixels, features, reverse=False):
        out = track(session, t, pixels, features, reverse)
        record["tracked"].append((t, out.pred_masks[:, 0].float().clone()))
        return out

    monkeypatch.setattr(TrackingSession, "prompt_masks", prompting)
    monkeypatch.setattr(TrackingSession, "track", tracking_frame)
    return record


@pytest.mark.parametrize("family", FAMILIES)
def test_a_region_on_a_video_frame_is_tracked_through_the_clip(tiny_chats, tracking, family):
    chat = tiny_chats[family]
    conv = chat.new_conversation()
    drawn = block(20, 30, 60, 90)
    with scripted_rounds(chat, ANSWER):
        reply = conv.ask("What are region 1 and region 2 doing?", video=FRAMES, regions=[
            Region(frame=2, points=[(30, 25)]), Region(frame=2, mask=drawn)])
    segmenter = chat.video_segmenter
    clicked = chat.segmenter.refine(segmenter.image_features(segmenter.frame_features(FRAMES[2]), (H, W)),
                                    [(30.0, 25.0)], [1])
    clicked = clicked if clicked.any() else drawn_mask(Region(points=[(30, 25)]), (W, H))
    assert [s.label for s in reply.regions] == ["region 1", "region 2"]
    assert all(isinstance(s.mask, VideoMask) and s.mask.shape == (6, H, W) for s in reply.regions)
    assert [t for t, _ in tracking["prompts"]] == [2]  # one session, both regions prompted on frame 2
    prompted = tracking["prompts"][0][1].numpy()
    assert np.array_equal(prompted[0], clicked) and np.array_equal(prompted[1], drawn)
    assert np.array_equal(reply.regions[0].mask[2], clicked) and np.array_equal(reply.regions[1].mask[2], drawn)
    regions_session = tracking["tracked"][:5]  # then the answer's [SEG] object is tracked
    assert [t for t, _ in regions_session] == [3, 4, 5, 1, 0]  # forward from frame 2, then backward
    for t, logits in regions_session:
        expected = (chat.model.upsample(logits, (H, W)) > 0).numpy()
        assert all(np.array_equal(s.mask[t], m) for s, m in zip(reply.regions, expected))
    assert conv.regions == [s.mask for s in reply.regions]
    assert len(reply.segments) == 1 and isinstance(reply.segments[0].mask, VideoMask)  # the answer's own object


@pytest.mark.parametrize("family", FAMILIES)
def test_the_model_sees_the_video_frames_with_numbered_marks(tiny_chats, monkeypatch, family):
    chat = tiny_chats[family]
    encoded = []
    encode = chat.processor.encode_images
    monkeypatch.setattr(chat.processor, "encode_images", lambda images, **kw: encoded.append((images, kw)) or
                        encode(images, **kw))
    region = block(20, 30, 60, 90)
    conv = chat.new_conversation()
    with scripted_rounds(chat, ANSWER) as seen:
        conv.ask("What is region 1?", video=FRAMES, regions=[Region(frame=2, mask=region)])
    (plain, _), (marked, options) = encoded
    assert options == {"as_video": True} and len(marked) == len(plain) == 5  # the LLM frames 0 to 4
    assert seen[0].runs == encode(marked, as_video=True).runs and not seen[0].regions
    frame = np.asarray(marked[2])  # where the region was drawn: its mask as drawn
    colour = np.array(palette(1)[0], dtype=float)
    assert np.array_equal(frame[~region], FRAMES[2][~region])
    assert np.array_equal(frame[25, 35], np.rint(FRAMES[2][25, 35] * 0.5 + colour * 0.5))
    assert np.array_equal(frame[20, 50], colour)
    assert "Marks show the regions: region 1 is marked R1." in chat.processor.tokenizer.decode(
        conv.history)


def test_video_follow_ups_add_marked_frames_and_refer_to_tracked_regions(tiny_chats, tracking):
    chat = tiny_chats["qwen3_vl"]
    conv = chat.new_conversation()
    with scripted_rounds(chat, ANSWER, ANSWER, ANSWER, ANSWER) as seen:
        conv.ask("What happens?", video=FRAMES)
        second = conv.ask("What is region 1?", regions=[Region(frame=4, box=(10, 10, 60, 50))])
        third = conv.ask("Does region 2 touch region 1?", regions=[Region(mask=block(0, 0, 30, 30))])
        fourth = conv.ask("Segment what region 1 holds.")
    assert [t for t, _ in tracking["prompts"]] == [4, 0]  # frame 0 when none is named
    assert [s.label for s in second.regions + third.regions] == ["region 1", "region 2"]
    assert len(seen[1].runs) == 2 * len(seen[0].runs)  # the plain frames, then the marked ones
    assert seen[1].runs[:len(seen[0].runs)] == seen[0].runs and len(seen[2].runs) == 3 * len(seen[0].runs)
    assert seen[3].runs == seen[2].runs and fourth.regions == [] and len(fourth.segments) == 1
    assert all(isinstance(m, VideoMask) for m in conv.regions) and len(conv.regions) == 2
    with pytest.raises(InputError, match="mentions region 3"):
        conv.ask("And region 3?")


BAD_VIDEO_REGIONS = {
    "frame after the clip": ([Region(frame=6, points=[(3, 3)])], "frames 0 to 5"),
    "negative frame": ([Region(frame=-1, points=[(3, 3)])], "frames 0 to 5"),
    "point outside the frame": ([Region(frame=1, points=[(W + 5, 10)])], "outside the image"),
    "mask of the wrong size": ([Region(frame=1, mask=np.ones((H + 1, W), bool))], "must match the image"),
}


@pytest.mark.parametrize("case", BAD_VIDEO_REGIONS)
def test_bad_video_regions_are_refused_and_the_conversation_is_unchanged(tiny_chats, case):
    chat = tiny_chats["qwen2_5_vl"]
    conv = chat.new_conversation()
    with scripted_rounds(chat, ANSWER):
        conv.ask("What is region 1?", video=FRAMES, regions=[Region(frame=1, points=[(10, 10)])])
    history, regions_before, media, vision = list(conv.history), list(conv.regions), conv.media, conv.vision
    regions, message = BAD_VIDEO_REGIONS[case]
    with pytest.raises(InputError, match=message):
        conv.ask("What is it?", regions=regions)
    with pytest.raises(InputError, match=message):
        chat.new_conversation().ask("What is it?", video=FRAMES, regions=regions)
    assert conv.history == history and conv.media is media and conv.vision is vision
    assert len(conv.regions) == len(regions_before) and all(a is b for a, b in zip(conv.regions, regions_before))
