"""Frame choice of `media.read_frame` on H.264 with B-frames: nearest (default) and keyframe rules,
decoder-side scaling. Frame k of each test clip has a distinct picture, so the frame returned names
its index."""
from __future__ import annotations

import av
import numpy as np
import pytest

from avfusion import media

FPS = 25


def _write_h264(path, n_frames: int, keyint: int, size=(96, 64)) -> list[np.ndarray]:
    """Frame k: grey level 8 + 3k with a bright bar at column 2k (x264, 3 B-frames, GOP `keyint`)."""
    width, height = size
    frames = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={
            "preset": "veryfast", "crf": "10", "bf": "3", "g": str(keyint), "keyint_min": str(keyint),
            "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(n_frames):
            img = np.full((height, width, 3), 8 + 3 * k, dtype=np.uint8)
            img[:, 2 * k % width] = 250
            frames.append(img)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = k
            container.mux(stream.encode(vf))
        container.mux(stream.encode())
    return frames


def _index_of(frame: np.ndarray, frames: list[np.ndarray]) -> int:
    return int(np.argmin([np.abs(frame.astype(int) - f).mean() for f in frames]))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("h264") / "gop16.mp4"
    return path, _write_h264(path, 60, keyint=16)


def test_nearest_rule_gives_the_frame_nearest_t_through_b_frames(clip):
    path, frames = clip
    for k in (0, 1, 5, 14, 15, 16, 17, 31, 33, 47, 58, 59):
        for offset in (-0.4, 0.0, 0.4):
            t = max((k + offset) / FPS, 0.0)
            got = media.read_frame(path, t)
            assert _index_of(got, frames) == k, (k, offset)
    assert _index_of(media.read_frame(path, 100.0), frames) == 59  # past the end: the last frame
    assert _index_of(media.read_frame(path), frames) == 0


def test_keyframe_rule_gives_the_keyframe_at_or_before_t(clip):
    path, frames = clip
    with av.open(str(path)) as container:
        keys = [round(float(p.pts * p.time_base) * FPS) for p in container.demux(video=0)
                if p.is_keyframe and p.pts is not None]
    assert keys == [0, 16, 32, 48]  # the official re-encode's GOP of 16
    for k in (0, 3, 15, 16, 20, 31, 32, 47, 48, 59):
        got = media.read_frame(path, (k + 0.2) / FPS, rule="keyframe")
        assert _index_of(got, frames) == 16 * (k // 16), k
    with pytest.raises(ValueError, match="frame rule"):
        media.read_frame(path, 1.0, rule="random")


def test_chosen_frame_decodes_exactly_as_a_full_decode(clip):
    """Skipping non-reference frames and seeking to the keyframe must not change a single pixel."""
    path, _ = clip
    with av.open(str(path)) as container:
        full = {round(f.time * FPS): f.to_ndarray(format="rgb24") for f in container.decode(video=0)}
    for k in (2, 7, 19, 30, 45, 57):
        assert np.array_equal(media.read_frame(path, k / FPS), full[k]), k
        assert np.array_equal(media.read_frame(path, k / FPS, threads=2), full[k]), k


def test_short_side_scales_in_the_decoder(clip, tmp_path):
    path, frames = clip
    small = media.read_frame(path, 10 / FPS, short_side=32)
    assert small.shape == (32, 48, 3)  # 64x96 -> short side 32, aspect kept
    assert abs(small.mean() - frames[10].mean()) < 2.0
    assert media.read_frame(path, 10 / FPS, short_side=128).shape == (64, 96, 3)  # never upscaled
