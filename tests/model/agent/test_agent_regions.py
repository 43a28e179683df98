"""Regions in agent mode: a plain VLM sees the regions' marks ("R1") on the image, under the candidates' numbers,
with a note naming them; clicks and boxes become masks through SAM 3's tracker where the checkpoint has one (the
drawn shape otherwise)."""

import numpy as np
import pytest
import torch
from PIL import Image

from model import InputError
from model.media.render import numbered_marks
from model.regions import Region, drawn_mask
from model.segmenters.concepts import ConceptPrompt, ConceptPrompts
from tests.helpers import scripted_rounds
from tests.model.agent.test_agent import keep, segment

H, W = 60, 80
IMAGE = np.random.default_rng(5).integers(0, 255, (H, W, 3), dtype=np.uint8)


def block(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def region_marks(masks: list[np.ndarray], first: int = 1) -> Image.Image:
    labels = [f"R{n}" for n in range(first, first + len(masks))]
    return Image.fromarray(numbered_marks(IMAGE, masks, labels=labels))


def test_every_round_sees_the_regions_marks_and_the_candidates_go_on_top(agent_chat):
    chat, processor = agent_chat, agent_chat.processor
    region = block(10, 10, 40, 50)
    with scripted_rounds(chat, segment("cup"), keep(1), "Region 1 is a cup.<|im_end|>") as seen:
        reply = chat.new_conversation().ask("What is region 1?", image=IMAGE, regions=[Region(mask=region)])
    shown = region_marks([region])
    assert seen[0].runs == processor.encode_images([shown]).runs  # the plan round: the image with "R1"
    segmenter = chat.concept_segmenter
    found = segmenter.segment(segmenter.encode(Image.fromarray(IMAGE)), ConceptPrompts([ConceptPrompt("cup")]))
    candidates = [s.mask for s in sorted(found, key=lambda s: -s.score)[:10]]
    choose = Image.fromarray(numbered_marks(np.asarray(shown), candidates))  # candidates are searched on the
    assert torch.equal(seen[1].tensors["pixel_values"],  # clean image and drawn over the regions' marks
                       processor.encode_images([choose]).tensors["pixel_values"])
    assert [s.label for s in reply.regions] == ["region 1"] and np.array_equal(reply.regions[0].mask, region)
    assert reply.text == "Region 1 is a cup." and [s.label for s in reply.segments] == ["cup"]


def test_the_question_comes_after_the_note_naming_the_marks(agent_chat):
    prompts = []
    original = agent_chat.processor.user_turn

    def user_turn(text, *args, **kwargs):
        prompts.append(text)
        return original(text, *args, **kwargs)

    agent_chat.processor.user_turn = user_turn
    try:
        with scripted_rounds(agent_chat, "A cup.<|im_end|>"):
            agent_chat.new_conversation().ask("What is region 1?", image=IMAGE,
                                              regions=[Region(box=(5, 5, 30, 40))])
    finally:
        del agent_chat.processor.user_turn
    assert prompts[0].startswith("Marks show the regions: region 1 is marked R1.\nWhat is region 1?")


def test_without_a_tracker_clicks_and_boxes_are_used_as_drawn_and_follow_ups_keep_them(agent_chat):
    assert not agent_chat.concept_segmenter.can_point  # the detector-only tiny SAM 3
    conv = agent_chat.new_conversation()
    box, click = Region(box=(5, 5, 30, 40)), Region(points=[(60, 20)])
    with scripted_rounds(agent_chat, "Two things.<|im_end|>", "Yes.<|im_end|>", "The same.<|im_end|>") as seen:
        first = conv.ask("What are region 1 and region 2?", image=IMAGE, regions=[box, click])
        second = conv.ask("Is region 3 like region 1?", regions=[Region(mask=block(40, 50, 55, 75))])
        third = conv.ask("And region 2?")
    drawn = [drawn_mask(box, (W, H)), drawn_mask(click, (W, H))]
    assert all(np.array_equal(s.mask, m) for s, m in zip(first.regions, drawn))
    assert [s.label for s in second.regions] == ["region 3"] and third.regions == []
    every = region_marks(drawn + [block(40, 50, 55, 75)])
    assert seen[1].runs == seen[2].runs == agent_chat.processor.encode_images([every]).runs
    with pytest.raises(InputError, match="mentions region 4, but this conversation has regions 1 to 3"):
        conv.ask("And region 4?")


def test_with_sam3s_tracker_clicks_and_boxes_become_its_masks(agent_video_chat):
    chat = agent_video_chat
    segmenter = chat.concept_segmenter
    features = segmenter.encode(Image.fromarray(IMAGE))
    click, box = Region(points=[(25, 15)]), Region(box=(10, 5, 70, 50), points=[(25, 35)], labels=[1])
    expected = [segmenter.refine(features, [(25.0, 15.0)], [1]), segmenter.refine(features, [(25.0, 35.0)], [1],
                                                                                      (10, 5, 70, 50))]
    assert all(m.any() and not np.array_equal(m, drawn_mask(r, (W, H))) for m, r in zip(expected, (click, box)))
    with scripted_rounds(chat, "Two.<|im_end|>"):
        reply = chat.new_conversation().ask("What are region 1 and region 2?", image=IMAGE, regions=[click, box])
    assert all(np.array_equal(s.mask, m) for s, m in zip(reply.regions, expected))


def test_a_box_reaches_sam3s_tracker_as_its_two_corners(agent_video_chat):
    """`refine` sends a box as SAM2's predictor does (two corner points before the clicks): for a box alone that is
    the tracker's own box prompt."""
    segmenter = agent_video_chat.concept_segmenter
    features = segmenter.encode(Image.fromarray(IMAGE))
    video, tracker = segmenter.video_model, segmenter.video_model.tracker_model
    maps, _ = video.get_vision_features_for_tracker(features.vision)
    maps[-1] = maps[-1] + tracker.no_memory_embedding
    embeddings = [m.permute(1, 2, 0).reshape(1, -1, *s) for m, s in zip(maps, tracker.backbone_feature_sizes)]
    side = tracker.image_size
    box = torch.tensor([[[10 * side / W, 5 * side / H, 70 * side / W, 50 * side / H]]])
    with torch.no_grad():
        logits = tracker._single_frame_forward(image_embeddings=embeddings, input_boxes=box).pred_masks
    expected = torch.nn.functional.interpolate(logits, size=(H, W), mode="bilinear")[0, 0] > 0
    assert np.array_equal(segmenter.refine(features, [], [], (10, 5, 70, 50)), expected.numpy())


def test_video_regions_are_refused_in_agent_mode(agent_video_chat):
    conv = agent_video_chat.new_conversation()
    frames = [Image.fromarray(IMAGE)] * 4
    with pytest.raises(InputError, match="regions can be drawn on images only"):
        conv.ask("What is region 1?", video=frames, regions=[Region(box=(5, 5, 30, 40))])
    assert conv.media is None and conv.regions == []
