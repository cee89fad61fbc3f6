"""Frame choice of `media.read_frame` on H.264 with B-frames: nearest (default) and keyframe rules,
decoder-side scaling. Frame k of each test clip has a distinct picture, so the frame returned names
its index."""
from __future__ import annotations

import av
import numpy as np
import pytest
import torch

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


def _write_av(path, n_frames: int = 40, keyint: int = 16) -> None:
    """H.264 as `_write_h264` plus a stereo 44.1 kHz AAC track (noise and a tone: FFmpeg's encoder uses
    noise substitution on such input, whose decoded samples depend on the decoder's history)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"g": str(keyint), "bf": "3", "crf": "10"})
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        audio = container.add_stream("aac", rate=44100)
        audio.layout = "stereo"
        for k in range(n_frames):
            img = np.full((64, 96, 3), 8 + 3 * k, dtype=np.uint8)
            img[:, 2 * k % 96] = 250
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = k
            container.mux(video.encode(vf))
        container.mux(video.encode())
        n = int(44100 * n_frames / FPS)
        wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100) + 0.1 * rng.standard_normal(n)).astype(np.float32)
        for i in range(0, n, 1024):
            chunk = np.stack([wave[i:i + 1024]] * 2)
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate, af.pts = 44100, i
            container.mux(audio.encode(af))
        container.mux(audio.encode())


def test_frame_after_the_audio_of_the_same_file_reuses_its_container_with_the_same_pixels(tmp_path):
    """An item reads its audio window, then its frame: the second read takes the container the first left
    open (one open per item). The frame must be the one a fresh open gives, under both rules, and the
    audio must never come from a reused container (always decoded fresh: the same samples every time)."""
    path, other = tmp_path / "av.mp4", tmp_path / "other.mp4"
    _write_av(path)
    _write_av(other, n_frames=30)
    media._HANDOFF.drop()
    for rule in ("nearest", "keyframe"):
        for t in (0.0, 0.5, 0.9, 1.5):
            media._HANDOFF.drop()
            fresh = media.read_frame(path, t, rule=rule)
            assert media._HANDOFF.entry is None
            wave = media.read_audio(path, 0.2, 1.2)
            assert media._HANDOFF.entry is not None  # left open for the frame
            assert np.array_equal(media.read_frame(path, t, rule=rule), fresh), (rule, t)
            assert media._HANDOFF.entry is None  # taken, and closed with the frame read
            media.read_frame(other, 0.4)
            media.read_audio(other, 0.0, 1.0)  # leaves `other` open; reading `path` must not use it
            assert np.array_equal(media.read_frame(path, t, rule=rule), fresh), (rule, t)
            assert torch.equal(media.read_audio(path, 0.2, 1.2), wave)
    assert media.read_frame(path).shape == (64, 96, 3)
