"""Video turns: masks at the original size, both propagation modes, bounded memory, exports, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from model import MediaError, SegChat
from model.errors import InputError
from model.tiny import build_tiny
from model.media.masks import VideoMask
from model.media.video_file import VideoLimits
from model.video.clip import VideoClip, VideoOptions
from tests.helpers import ScriptedAnswer, script, shared_path

ANSWER = "It is <p>dog</p> [SEG] and [SEG].<|im_end|>"


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    sc = SegChat.from_pretrained(build_tiny(tmp_path_factory.mktemp("tiny_video") / "m", "qwen2_5_vl"))
    sc.generate_options = {"logits_processor": [ScriptedAnswer(script(sc, ANSWER))]}
    return sc


def _frames(n: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """A white square moving right over a dark background; it leaves the picture after a while."""
    out = []
    for i in range(n):
        arr = np.full((height, width, 3), 30, np.uint8)
        x = 4 + 3 * i
        arr[10:26, x:x + 16] = 255
        out.append(arr)
    return out


def _write(path: Path, frames: list[np.ndarray], codec: str = "libx264", fmt: str | None = None) -> Path:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode(None))
    return path


# ------------------------------------------------------------------------------------------------ real videos


def test_sa2va_mode_real_video_masks_at_original_size(chat):
    video = shared_path("data", "videos", "01_dog.mp4")
    conv = chat.new_conversation()
    reply = conv.ask("Segment the dog.", video=video, propagation="sa2va", max_frames=12)
    assert len(reply.segments) == 2
    assert any("only the first 12" in w for w in reply.warnings)
    for seg in reply.segments:
        assert isinstance(seg.mask, VideoMask)
        assert seg.mask.shape == (12, 720, 1280)
        assert seg.mask[3].shape == (720, 1280) and seg.mask[3].dtype == bool
        assert np.asarray(seg.mask).shape == (12, 720, 1280)
        assert seg.mask.presence.shape == (12,) and np.isfinite(seg.mask.presence).all()
        # a frame whose object score says "absent" has an empty mask
        for t in range(12):
            if seg.mask.presence[t] <= 0:
                assert not seg.mask[t].any()
    stats = reply.video_stats
    assert stats.conditioning_frames == 5 and stats.frames_processed == 12


def test_memory_mode_uniform_real_video_backward(chat):
    video = shared_path("data", "videos", "02_cups.mp4")
    conv = chat.new_conversation()
    reply = conv.ask("Segment the cups.", video=video, propagation="memory", frame_sampling="uniform",
                     llm_frames=3, stride=15, max_side=320)
    t = len(reply.segments[0].mask)
    assert t == -(-conv.media.clip.length // 1) and t >= 19
    assert reply.segments[0].mask.shape[1:] == (720, 1280)  # original size although decoded at 320 px
    assert conv.media.llm_indices[0] > 0  # frames before the key frame come from backward propagation
    assert reply.video_stats.frames_processed == t
    assert (reply.segments[0].mask.frame_indices == np.arange(t) * 15).all()


# ------------------------------------------------------------------------------------------------ memory bound


@pytest.mark.parametrize("mode,sampling", [("memory", "uniform"), ("sa2va", "first")])
def test_memory_is_bounded_by_frames_held_not_clip_length(chat, mode, sampling):
    config = chat.model.sam2.config
    window = max(config.num_maskmem - 1, config.max_object_pointers_in_encoder - 1)
    stats = []
    for n in (40, 80):  # both long enough to fill the memory bank
        conv = chat.new_conversation()
        s = conv.ask("Segment it.", video=_frames(n), propagation=mode, frame_sampling=sampling).video_stats
        assert s.frames_processed == n
        assert s.max_pixel_frames <= 1 and s.max_cached_features <= 1
        assert s.max_tracked_outputs <= 2 * window  # recent outputs (+ the seed of the backward pass)
        assert s.max_memory_features <= 2 * (config.num_maskmem - 1)
        stats.append(s)
    short, long = stats
    assert long.max_tracked_outputs == short.max_tracked_outputs
    assert long.max_memory_features == short.max_memory_features


def test_tracked_frames_read_the_object_pointers_of_earlier_frames(chat, monkeypatch):
    """SAM2 memory attention reads the object pointers of the prompted frame and of the recent tracked ones (the
    pruned session must not hide them)."""
    sam2 = chat.model.sam2
    original = type(sam2)._get_object_pointers
    pointers = []

    def counting(self, *args, **kwargs):
        offsets, tokens, limit = original(self, *args, **kwargs)
        pointers.append(len(tokens))
        return offsets, tokens, limit

    monkeypatch.setattr(type(sam2), "_get_object_pointers", counting)
    chat.new_conversation().ask("Segment it.", video=_frames(12), propagation="memory", key_frames=1)
    assert sam2.config.max_object_pointers_in_encoder >= 12
    # The prompted frame's pointer and one per tracked frame before, going the longer way from the key frame (at
    # least 6 of the 12); a session that hid the tracked frames would give 1 everywhere.
    assert max(pointers) >= 6


def test_clip_holds_no_frames_for_files(tmp_path):
    path = _write(tmp_path / "v.mp4", _frames(30))
    clip = VideoClip(path, VideoOptions())
    assert clip.length == 30 and clip._frames is None
    assert [t for t, _ in clip.iterate_backward(10, chunk=4)] == list(range(9, -1, -1))


# ------------------------------------------------------------------------------------------------ outputs


def test_overlay_mp4_and_rle_json(chat, tmp_path):
    from model.media.export import write_coco_rle_json, write_overlay_video

    path = _write(tmp_path / "in.mp4", _frames(17, 66, 50))
    conv = chat.new_conversation()
    reply = conv.ask("Segment it.", video=path)
    out = write_overlay_video(conv.media.clip, [s.mask for s in reply.segments], tmp_path / "overlay.mp4")
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        decoded = [f for f in container.decode(stream)]
    assert len(decoded) == 17
    assert (decoded[0].width, decoded[0].height) == (66, 50)

    masks, labels, scores = zip(*((s.mask, s.label, s.score) for s in reply.segments))
    data = json.loads(write_coco_rle_json(masks, labels, tmp_path / "masks.json", scores).read_text())
    assert len(data["objects"]) == 2
    obj = data["objects"][0]
    assert len(obj["segmentations"]) == 17 and len(obj["presence"]) == 17
    rle = dict(obj["segmentations"][5], counts=obj["segmentations"][5]["counts"].encode())
    assert (mask_utils.decode(rle).astype(bool) == reply.segments[0].mask[5]).all()


# ------------------------------------------------------------------------------------------------ multi-turn


def test_follow_up_reuses_llm_frames_and_sam2_features(chat, tmp_path, monkeypatch):
    from model.video import segmenter

    path = _write(tmp_path / "v.mp4", _frames(12))
    conv = chat.new_conversation()
    conv.ask("Segment it.", video=path)
    media = conv.media
    features = dict(media.sam_features)
    assert sorted(features) == media.llm_indices == [0, 1, 2, 3, 4]
    # the frames hold one position encoding between them (it depends on the size only), and no finer ones
    assert len({id(f["vision_pos_embeds"][0]) for f in features.values()}) == 1
    assert all(len(f["vision_pos_embeds"]) == 1 for f in features.values())
    calls = []
    original = segmenter.VideoSegmenter.pixel_features
    monkeypatch.setattr(segmenter.VideoSegmenter, "pixel_features",
                        lambda self, pixels: calls.append(1) or original(self, pixels))
    reply = conv.ask("And now with memory?", propagation="memory")
    assert conv.media is media
    assert all(media.sam_features[t] is features[t] for t in features)
    assert len(calls) == 12 - 5  # SAM2 encodes the frames beyond the LLM frames only
    assert reply.segments[0].mask.shape == (12, 48, 64)
    with pytest.raises(InputError):
        conv.ask("again", llm_frames=3)  # changing the LLM frames needs the video again


def test_single_frame_video(chat, tmp_path):
    conv = chat.new_conversation()
    reply = conv.ask("Segment it.", video=_write(tmp_path / "one.mp4", _frames(1)))
    assert reply.segments[0].mask.shape == (1, 48, 64)


def test_extension_that_lies_is_read_by_content(chat, tmp_path):
    path = _write(tmp_path / "v.mp4", _frames(6))
    liar = tmp_path / "v.gif"
    liar.write_bytes(path.read_bytes())
    reply = chat.new_conversation().ask("Segment it.", video=liar)
    assert reply.segments[0].mask.shape == (6, 48, 64)


def test_animated_gif(chat, tmp_path):
    from PIL import Image

    frames = [Image.fromarray(f) for f in _frames(7)]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    reply = chat.new_conversation().ask("Segment it.", video=path, propagation="memory")
    assert reply.segments[0].mask.shape == (7, 48, 64)


# ------------------------------------------------------------------------------------------------ bad input


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 44100
            frame.pts = i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_picture_named_mp4_is_a_one_frame_video(chat, tmp_path):
    from PIL import Image

    source = tmp_path / "p.mp4"
    Image.fromarray(_frames(1)[0]).save(source, format="PNG")  # the content decides, not the extension
    assert chat.new_conversation().ask("Segment it.", video=source).segments[0].mask.shape == (1, 48, 64)


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty", "audio", "missing",
                                  "not_a_video_object", "empty_list"])
def test_bad_input_gives_clear_error_and_keeps_conversation(chat, tmp_path, kind):
    good = _write(tmp_path / "good.mp4", _frames(40, 320, 240))
    if kind == "corrupt":
        source = tmp_path / "c.mp4"
        source.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    elif kind == "truncated":
        source = tmp_path / "t.mp4"
        source.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        source = tmp_path / "e.mp4"
        source.write_bytes(b"")
    elif kind == "audio":
        source = _audio_only(tmp_path / "a.mp4")
    elif kind == "missing":
        source = tmp_path / "nope.mp4"
    elif kind == "not_a_video_object":
        source = 42
    else:
        source = []
    conv = chat.new_conversation()
    conv.ask("Segment it.", video=_write(tmp_path / "ok.mp4", _frames(6)))
    before = (conv.media, list(conv.history))
    with pytest.raises(MediaError) as err:
        conv.ask("Segment it.", video=source)
    assert str(err.value) and "Traceback" not in str(err.value)
    assert (conv.media, conv.history) == before


def test_limits_resolution_length_and_truncation(chat, tmp_path):
    from model.processing import Limits, SegChatProcessor

    def limited(limits: Limits) -> SegChat:
        processor = chat.processor
        return SegChat(chat.model, SegChatProcessor(chat.model.config, processor.tokenizer, processor.image_processor,
                                                    limits))

    path = _write(tmp_path / "v.mp4", _frames(40, 320, 240))
    strict = limited(Limits(video=VideoLimits(max_side=200)))
    with pytest.raises(MediaError, match="320×240"):
        strict.new_conversation().ask("Segment it.", video=path)
    short = limited(Limits(video=VideoLimits(max_frames=10)))
    with pytest.raises(MediaError, match="40 frames"):
        short.new_conversation().ask("Segment it.", video=path)
    with pytest.raises(MediaError, match="MiB"):
        limited(Limits(video=VideoLimits(max_file_bytes=100))).new_conversation().ask("x", video=path)
    reply = chat.new_conversation().ask("Segment it.", video=path, max_frames=8)
    assert reply.segments[0].mask.shape[0] == 8 and "only the first 8" in reply.warnings[0]


def test_bad_options(chat):
    conv = chat.new_conversation()
    for options in ({"propagation": "magic"}, {"frame_sampling": "random"}, {"llm_frames": 0}, {"stride": -1},
                    {"bogus": 1}):
        with pytest.raises(InputError):
            conv.ask("Segment it.", video=_frames(3), **options)
    with pytest.raises(InputError):
        conv.ask("Segment it.", propagation="memory")  # no video in the conversation
