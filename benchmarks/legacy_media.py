"""Frozen copy of the frame reader before issue 16 (commit 9cd7d3d), kept to measure against.

Every frame decoded between the seek point (1 s before t) and t was converted to RGB, decoding was
single-threaded (slice threads only) and at full resolution. Do not use outside benchmarks.
"""
from __future__ import annotations

import math
from pathlib import Path

import av

from avfusion.media import IMAGE_SUFFIXES, MediaError, _declared_end, _frame_time, _open, _read_image


def read_frame(path: str | Path, t: float | None = None):
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_image(path)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else 25.0
        try:
            best = _nearest_frame(container, stream, t, fps, seek=t is not None and t > 1.0)
            if best is None:  # the seek landed after the last frame: decode from the start
                container.seek(0)
                best = _nearest_frame(container, stream, t, fps, seek=False)
        except av.error.FFmpegError as err:
            raise MediaError(f"{path}: video decoding failed ({err})") from None
    if best is None:
        raise MediaError(f"{path}: no video frames decoded")
    return best


def _nearest_frame(container, stream, t, fps, seek):
    if seek:
        container.seek(int(max(t - 1.0, 0.0) * av.time_base))  # to the keyframe before t
    best, best_dt, ts = None, math.inf, None
    for i, frame in enumerate(container.decode(stream)):
        ts = _frame_time(frame, i, fps)
        dt = 0.0 if t is None else abs(ts - t)
        if dt < best_dt:
            best, best_dt = frame.to_ndarray(format="rgb24"), dt
        if t is None or ts >= t:
            return best
    declared = _declared_end(stream)
    if best is not None and declared is not None and ts < min(t, declared - 1 / fps) - 1.5 / fps:
        raise MediaError(f"{container.name}: truncated or corrupt: video frames end at {ts:.3f} s "
                         f"but the stream declares {declared:.3f} s")
    return best
