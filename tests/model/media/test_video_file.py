"""Video probing, streaming decode, rotation, sampling, and hostile video files."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from model.errors import MediaError
from model.media.video_file import VideoFile, VideoLimits, probe_video
from model.video.clip import frames_from_list, sample_indices
from tests.helpers import shared_path


def iter_frames(path, stride=1, max_side=None, limits=VideoLimits()):
    return VideoFile(path, limits).frames(stride, max_side)


def read_frames(path, indices, max_side=None):
    return VideoFile(path).read(indices, max_side)


def frame_times(path):
    return list(probe_video(path).frame_times)

def _real(name: str) -> Path:
    return shared_path("data", "videos", name)


def _frame(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame i: a white left quarter and a grey level that encodes i."""
    arr = np.full((height, width, 3), 10 * i % 200, np.uint8)
    arr[:, : width // 4] = 255
    return arr


def _write(path: Path, n: int, codec: str = "libx264", rotation: int = 0, fmt: str | None = None,
           pts: list[int] | None = None, width: int = 64, height: int = 48,
           time_base: Fraction = Fraction(1, 10)) -> Path:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if pts is not None:
            stream.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(_frame(i, width, height), format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(4):
            silence = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(("name", "frames"), [("01_dog.mp4", 289), ("02_cups.mp4", 300)])
def test_probe_real_video(name, frames):
    info = probe_video(_real(name))
    assert (info.width, info.height, info.codec, info.rotation) == (1280, 720, "h264", 0)
    assert info.n_frames == frames
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert info.duration_s == pytest.approx(frames / 29.97, abs=0.1)


def test_iter_frames_stride_and_max_side_on_real_video():
    frames = list(itertools.islice(iter_frames(_real("01_dog.mp4"), stride=10, max_side=320), 4))
    assert [i for i, _ in frames] == [0, 10, 20, 30]
    for _, arr in frames:
        assert arr.shape == (180, 320, 3) and arr.dtype == np.uint8
    assert frames[0][1].std() > 10  # real picture content, not a blank frame


def test_read_frames_matches_iteration_on_real_video():
    path = _real("bedroom.mp4")
    picked = read_frames(path, [12, 3, 12], max_side=240)
    streamed = dict(itertools.islice(iter_frames(path, max_side=240), 13))
    assert np.array_equal(picked[0], streamed[12]) and np.array_equal(picked[1], streamed[3])
    assert np.array_equal(picked[0], picked[2])
    assert picked[0].shape == (135, 240, 3)


def test_stride_counts_on_short_clip(tmp_path):
    path = _write(tmp_path / "clip.mp4", 23)
    assert [i for i, _ in iter_frames(path, stride=5)] == [0, 5, 10, 15, 20]
    first = next(iter_frames(path))[1]
    assert first.shape == (48, 64, 3)
    assert first[:, :8].min() > 230 and first[:, 40:].max() < 30  # left quarter is white


def test_read_frames_past_end(tmp_path):
    path = _write(tmp_path / "clip.mp4", 5)
    with pytest.raises(MediaError, match="frame 9 does not exist"):
        read_frames(path, [1, 9])


def test_rotated_video_display_orientation(tmp_path):
    path = _write(tmp_path / "phone.mp4", 3, rotation=90)
    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    frames = [arr for _, arr in iter_frames(path, max_side=32)]
    assert len(frames) == 3 and frames[0].shape == (32, 24, 3)
    # 90° counter-clockwise: the white left quarter becomes the bottom quarter.
    assert frames[0][-4:].min() > 230 and frames[0][:12].max() < 30


@pytest.mark.parametrize(
    ("name", "codec", "fmt", "expected_codec"),
    [("clip.webm", "libvpx-vp9", None, "vp9"), ("clip.mov", "libx264", None, "h264"),
     ("webm_named.mp4", "libvpx-vp9", "webm", "vp9")],  # the extension lies; content wins
)
def test_other_containers(tmp_path, name, codec, fmt, expected_codec):
    path = _write(tmp_path / name, 4, codec=codec, fmt=fmt)
    info = probe_video(path)
    assert info.codec == expected_codec and (info.width, info.height) == (64, 48)
    assert len(list(iter_frames(path))) == 4


def test_animated_gif_variable_frame_rate(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.fromarray(_frame(i, 40, 30)) for i in range(5)]
    durations_ms = [100, 100, 300, 100, 100]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations_ms)
    info = probe_video(path)
    assert (info.codec, info.width, info.height, info.n_frames) == ("gif", 40, 30, 5)
    assert [arr.shape for _, arr in iter_frames(path)] == [(30, 40, 3)] * 5
    assert frame_times(path) == pytest.approx([0.0, 0.1, 0.2, 0.5, 0.6])


def test_variable_frame_rate_timestamps_from_pts(tmp_path):
    path = _write(tmp_path / "vfr.mkv", 4, pts=[0, 1, 5, 6])
    assert frame_times(path) == pytest.approx([0.0, 0.1, 0.5, 0.6])
    assert [i for i, _ in iter_frames(path)] == [0, 1, 2, 3]


def test_frame_limit_enforced_while_decoding(tmp_path):
    # 12 frames 1 ms apart at a declared 10 fps: the header suggests a single frame.
    path = _write(tmp_path / "dense.mkv", 12, pts=list(range(12)), time_base=Fraction(1, 1000))
    assert probe_video(path).n_frames < 5
    with pytest.raises(MediaError, match="more than 5 frames"):
        for _ in iter_frames(path, limits=VideoLimits(max_frames=5)):
            pass


def _corrupt_codec_tag(tmp_path: Path) -> Path:
    data = _write(tmp_path / "ok.mp4", 3).read_bytes()
    bad = tmp_path / "unknown_codec.mp4"
    bad.write_bytes(data.replace(b"avc1", b"zzz9"))
    return bad


def test_hostile_files(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cases = {
        tmp_path / "missing.mp4": "does not exist",
        empty: "empty",
        text: "not a video file",
        _audio_only(tmp_path / "song.m4a"): "only audio",
        _corrupt_codec_tag(tmp_path): "codec that is not supported",
        tmp_path: "not a file",
    }
    for path, message in cases.items():
        with pytest.raises(MediaError, match=message) as err:
            probe_video(path)
        assert str(tmp_path) not in str(err.value)


def test_truncated_real_video(tmp_path):
    data = _real("01_dog.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError, match="incomplete"):
        probe_video(cut)


def test_damaged_frames_raise_while_streaming(tmp_path):
    path = _write(tmp_path / "clip.mp4", 60)
    data = bytearray(path.read_bytes())
    middle = data.find(b"mdat") + (len(data) - data.find(b"mdat")) // 2
    data[middle : middle + 200] = bytes(200)  # the index (moov) at the end stays intact
    path.write_bytes(bytes(data))
    frames = iter_frames(path)
    with pytest.raises(MediaError, match="damaged after frame"):
        for _ in frames:
            pass


def test_cut_matroska_is_not_silently_short(tmp_path):
    # Matroska has no sample index, and its demuxer stops quietly at garbage.
    path = _write(tmp_path / "clip.mkv", 60)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    path.write_bytes(bytes(data))
    with pytest.raises(MediaError, match="incomplete: frames stop at"):
        for _ in iter_frames(path):
            pass


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (VideoLimits(max_file_bytes=1_000_000), "MiB; the limit is"),
        (VideoLimits(max_duration_s=5), "lasts 9.6 s; the limit is 5 s"),
        (VideoLimits(max_frames=100), "289 frames; the limit is 100"),
        (VideoLimits(max_side=1000), "1280×720 pixels"),
    ],
)
def test_limits_enforced_before_decoding(limits, message):
    with pytest.raises(MediaError, match=message):
        iter_frames(_real("01_dog.mp4"), limits=limits)  # raises at call, not on iteration


def test_sample_indices():
    assert sample_indices(300, 5) == [0, 1, 2, 3, 4]
    assert sample_indices(300, 5, mode="uniform") == [30, 90, 150, 210, 270]
    assert sample_indices(10, 3, mode="uniform") == [1, 5, 8]
    assert sample_indices(3, 5, mode="uniform") == [0, 1, 2]
    assert sample_indices(0, 5) == []
    with pytest.raises(ValueError):
        sample_indices(10, 0)
    with pytest.raises(ValueError):
        sample_indices(10, 2, mode="random")


def test_frames_from_list_uses_image_rules():
    frames = frames_from_list([Image.new("RGBA", (8, 6)), np.zeros((6, 8, 3), np.uint8)])
    assert [f.shape for f in frames] == [(6, 8, 3)] * 2
    with pytest.raises(MediaError, match="same size"):
        frames_from_list([np.zeros((6, 8, 3), np.uint8), np.zeros((8, 6, 3), np.uint8)])
    with pytest.raises(MediaError, match="uint8"):
        frames_from_list([np.zeros((6, 8, 3), np.float64)])
    with pytest.raises(MediaError, match="no frames"):
        frames_from_list([])
    with pytest.raises(MediaError, match="3 frames; the limit is 2"):
        frames_from_list([np.zeros((6, 8), np.uint8)] * 3, limits=VideoLimits(max_frames=2))
