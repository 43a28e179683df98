"""SAM 3 concept tracking in videos on a tiny random full SAM 3 (detector + tracker): the same instances as
transformers' own offline tracking, stable ids, memory that does not grow with the clip, and the conversation API."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Sam3VideoModel, Sam3VideoProcessor

from model import InputError
from model.segmenters.concepts import ConceptOptions, ConceptPrompt, ConceptPrompts
from model.video.clip import VideoClip, VideoOptions
from model.video.concepts import ConceptTracker, ConceptTrackingStats
from tests.helpers import write_video


def sliding_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """A random picture seen through a window moving one pixel a frame: instances persist from frame to frame."""
    base = np.random.default_rng(seed).integers(0, 255, (60, 80 + n, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[:, t:t + 80]) for t in range(n)]


@pytest.fixture
def tracker(video_concept_chat):
    segmenter = video_concept_chat.concept_segmenter
    yield ConceptTracker(segmenter)
    segmenter.options = ConceptOptions()


def test_instances_and_ids_equal_transformers_offline_tracking(tracker, tiny_sam3_video_dir):
    """Our streamed, pruned session gives exactly what `propagate_in_video_iterator` gives on the whole video in
    memory (the tiny tracker's windows are 2 memories, 4 pointers, 2 conditioning frames: 14 frames prune)."""
    tracker.segmenter.options = ConceptOptions(max_video_instances=10_000)  # the iterator has no cap
    frames = sliding_frames(14)
    segments, stats = tracker.track(VideoClip(frames, VideoOptions()),
                                     ConceptPrompts([ConceptPrompt("car"), ConceptPrompt("cup")]))
    assert stats.max_outputs_held < stats.frames_processed  # pruning happened

    model = Sam3VideoModel.from_pretrained(tiny_sam3_video_dir).eval()
    processor = Sam3VideoProcessor.from_pretrained(tiny_sam3_video_dir)
    session = processor.init_video_session(video=frames, inference_device="cpu", dtype=torch.float32)
    processor.add_text_prompt(session, ["car", "cup"])
    expected: dict[int, dict[int, np.ndarray]] = {}
    for out in model.propagate_in_video_iterator(session):
        final = processor.postprocess_outputs(session, out)
        for i, obj_id in enumerate(final["object_ids"].tolist()):
            expected.setdefault(obj_id, {})[out.frame_idx] = final["masks"][i].numpy()
    expected = {k: v for k, v in expected.items() if any(m.any() for m in v.values())}

    ours = {s.instance_id: s for s in segments if s.found}
    assert sorted(ours) == sorted(expected) and len(ours) >= 2
    persistent = 0
    for obj_id, segment in ours.items():
        assert segment.label == session.prompts[session.obj_id_to_prompt_id[obj_id]]
        for t in range(len(frames)):
            assert np.array_equal(segment.mask[t], expected[obj_id].get(t, np.zeros((60, 80), bool))), (obj_id, t)
        persistent += sum(segment.mask[t].any() for t in range(len(frames))) > 1
    assert persistent >= 1  # at least one instance is followed over several frames under one id


def test_memory_held_does_not_grow_with_the_clip(tracker):
    tracker.segmenter.options = ConceptOptions(max_video_instances=3)
    phrases = ConceptPrompts([ConceptPrompt("car")])
    held = []
    for n in (8, 32):
        _, stats = tracker.track(VideoClip(sliding_frames(n), VideoOptions()), phrases)
        assert stats.frames_processed == n
        held.append((stats.max_frames_held, stats.max_outputs_held, stats.max_buffered, stats.max_score_frames))
    config = tracker.model.config
    assert held[0] == held[1]
    frames, outputs, buffered, scores = held[1]
    assert frames == 1 and scores <= 2 and buffered <= config.hotstart_delay + 1
    assert outputs <= config.tracker_config.num_maskmem + config.tracker_config.max_object_pointers_in_encoder


def test_find_on_a_video_in_a_conversation(video_concept_chat, scripted, tmp_path):
    chat = video_concept_chat
    chat.concept_segmenter.options = ConceptOptions(max_video_instances=6)
    try:
        conv = chat.new_conversation()
        scripted(chat, "It is <p>the cup</p> [SEG].<|im_end|>")
        conv.ask("Where is the cup?", video=[Image.fromarray(f) for f in sliding_frames(6)])
        reply = conv.find(["car", "cup"])
        found = [s for s in reply.segments if s.found]
        assert found and isinstance(reply.video_stats, ConceptTrackingStats)
        assert len({s.instance_id for s in found}) == len(found)
        assert {s.label for s in found} <= {"car", "cup"}
        assert all(s.mask.shape == (6, 60, 80) and any(m.any() for m in s.mask) for s in found)
        assert reply.text.startswith(found[0].label)  # the count summary: "car × N, ..."

        absent = conv.find("cup", score_threshold=1.0)
        assert [s.found for s in absent.segments] == [False] and absent.warnings == ["'cup' is not in the video."]
        assert absent.segments[0].mask.shape == (6, 60, 80) and not np.asarray(absent.segments[0].mask).any()

        with pytest.raises(InputError, match="Exemplar boxes work on images"):
            conv.find("cup", boxes=[(0, 0, 10, 10)])
        assert conv.ask("And the car?").text  # the conversation goes on

        video = write_video(tmp_path / "clip.mp4", frames=4, width=48, height=32)
        fresh = chat.new_conversation().find("car", video=video, score_threshold=0.0)
        assert all(s.mask.shape == (4, 32, 48) for s in fresh.segments)
    finally:
        chat.concept_segmenter.options = ConceptOptions()
