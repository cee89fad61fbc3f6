"""`read_frame` (rule "nearest") skips the H.264 reference B-frames the chosen frame does not need
(`avfusion/h264.py`); the frame must still be the full decode's, pixel for pixel.

Clips: a real testdata picture (deepavfusion demo 1) panned with sensor-like noise, 320x180, 2 s, made
by libx264 with its default GOP (B-pyramid, so a quarter of the frames are reference B-frames that
carry MMCOs) and with other encoder structures (3 references and weighted P prediction, 2 B-frames,
B-frames not used as references, no B-frames). Every frame of each clip is compared with a full
decode (every other frame; every sixth also from between two frames). ~8 CPU-s in all.
"""
from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from avfusion import h264, media

FPS, SECONDS, SIZE = 25, 2, (320, 180)
ENCODINGS = {  # name -> libx264 options (x264's own defaults otherwise)
    "default": {"preset": "veryfast"},
    "ref3-weightp": {"preset": "medium", "refs": "3", "weightp": "2"},
    "bf2": {"preset": "veryfast", "bf": "2"},
    "no-bpyramid": {"preset": "veryfast", "x264-params": "b-pyramid=none"},
    "no-bframes": {"preset": "veryfast", "bf": "0"},
}


def _make_clip(source, path, options) -> None:
    with av.open(str(source)) as c:
        picture = next(c.decode(video=0)).to_ndarray(format="rgb24")
    width, height = SIZE
    big = np.asarray(Image.fromarray(picture).resize((int(width * 1.2), int(height * 1.2)), Image.BILINEAR))
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=FPS, options=dict(options))
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", 300_000
        n = FPS * SECONDS
        for k in range(n):
            x0 = int((big.shape[1] - width) * k / n)
            y0 = int((big.shape[0] - height) * k / (2 * n))
            img = big[y0:y0 + height, x0:x0 + width].astype(np.float32)
            img = np.clip(img + rng.normal(0, 4, size=(height, width, 1)), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = k
            c.mux(stream.encode(frame))
        c.mux(stream.encode())


@pytest.fixture(scope="module")
def clips(testdata, tmp_path_factory):
    folder = tmp_path_factory.mktemp("h264skip")
    out = {}
    for name, options in ENCODINGS.items():
        _make_clip(testdata / "deepavfusion" / "demos" / "demo1_orig.mp4", folder / f"{name}.mp4", options)
        out[name] = folder / f"{name}.mp4"
    return out


def _full_decode(path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_every_frame_is_the_full_decodes(clips, name, monkeypatch):
    path = clips[name]
    full = _full_decode(path)
    plans = []
    real_plan = h264.skip_plan

    def recording_plan(*args):
        try:
            plan = real_plan(*args)
        except h264.Unsupported:
            plans.append(None)
            raise
        plans.append(plan)
        return plan

    monkeypatch.setattr(h264, "skip_plan", recording_plan)
    for k, (ts, pixels) in enumerate(full):
        if k % 2 and k != len(full) - 1:
            continue
        for t in (ts, ts + 0.4 / FPS)[:1 + (k % 3 == 0)]:  # at the frame, and nearer to it than to the next
            assert np.array_equal(media.read_frame(path, t), pixels), (name, k, t)
    skipped = sum(p.count("BIDIR") for p in plans if p)
    if name == "no-bframes":  # POC type 2 without B-frames: nothing to skip, the plan declines
        assert plans and all(p is None for p in plans)
    elif name in ("no-bpyramid", "ref3-weightp"):  # nothing to skip beyond the non-reference frames:
        # no reference B-frames, or (3 references) every reference B-frame is in a later P-frame's list 0
        assert all(p is not None for p in plans) and skipped == 0
    else:  # the plan held for every frame and skipped reference B-frames
        assert all(p is not None for p in plans), name
        refs_decoded = sum(p.count("DEFAULT") for p in plans)
        assert skipped > 0.2 * refs_decoded, (name, skipped, refs_decoded)


def test_frame_structure_of_the_default_encoding(clips):
    """What the plan works with: x264's default GOP spans the clip (one IDR), about half the frames
    are non-reference B-frames and a quarter reference B-frames, which carry MMCOs (adaptive marking)."""
    path = clips["default"]
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        packets = [p for p in c.demux(stream) if p.size]
        extradata = stream.codec_context.extradata
    frames = h264._frames(extradata, packets, len(packets) - 1)
    n = len(frames)
    kinds = [("I" if f["idr"] else "ref-B" if f.get("kinds") == {1} else "P") if f["ref"] else "non-ref"
             for f in frames]
    assert n == FPS * SECONDS and kinds[0] == "I" and kinds.count("I") == 1
    assert 0.35 < kinds.count("non-ref") / n < 0.6
    assert 0.15 < kinds.count("ref-B") / n < 0.35
    with_mmco = [bool(f["mmco"]) for f, kind in zip(frames, kinds) if kind == "ref-B"]
    assert sum(with_mmco) > 0.8 * len(with_mmco)  # all but the first: x264 unmarks the previous B-ref
