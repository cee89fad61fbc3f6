"""PyAV readers: an audio window at sample accuracy, the video frame nearest a time, still images.

    wave = read_audio("clip.mp4", 3.5, 6.5)   # float32 (48000,), 16 kHz mono
    frame = read_frame("clip.mp4", 5.0)      # uint8 (H, W, 3), the frame nearest t = 5.0 s
    frame = read_frame("frame.jpg")          # still images are read with PIL

Any file that cannot be read raises `MediaError` naming the file and the problem; nothing is ever
replaced by another clip (the official code silently substitutes a random sample, spec 1.3).
Channels are averaged; other rates go through the Hann-windowed sinc resampler of
`avfusion.audio.resample` (torchaudio's default, used by the official video datasets).
wav/flac/ogg are decoded with libsndfile (same samples, ~25x faster on short files), the rest with
PyAV; a stream that ends well before its declared duration (or a wav whose data chunk is shorter
than its header says) is reported as truncated, never padded as if complete.
"""
from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile
import torch
from PIL import Image

from . import h264
from .audio import SAMPLE_RATE, resample

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg"}
_SEEK_AFTER_S = 5.0  # windows starting later than this seek instead of decoding from the start
_MARGIN_S = 0.05  # extra audio decoded on each side so resampling has no edge effects
_TRUNCATION_TOL_S = 0.15  # decoded audio may end this much before the declared end (codec padding)
_WAV_DATA_CUT = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)


class MediaError(ValueError):
    """A media file is missing, unreadable, empty or too short; the message names it."""


@dataclass
class MediaInfo:
    path: str
    duration: float  # seconds (longest stream)
    audio_rate: int | None = None
    audio_channels: int | None = None
    audio_duration: float | None = None
    audio_codec: str | None = None
    video_fps: float | None = None
    video_frames: int | None = None
    video_size: tuple[int, int] | None = None  # (width, height)
    video_duration: float | None = None
    video_codec: str | None = None


_MOV_FAMILY = "mov,mp4,m4a,3gp,3g2,mj2"  # FFmpeg's name for the ISO-BMFF demuxer
_SMALL_PROBE = {"skip_frame": "all", "probesize": "32", "analyzeduration": "0"}


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (0 bytes)")
    try:
        # mp4/mov keep every stream's parameters (size, rate, channels, timing) in the header, so the
        # probe needs no packets at all (probesize 32: 1 ms instead of 2.7 ms for a 720p clip); other
        # containers, or a header that lacks them, get the stream probe with skip_frame=all (reads the
        # parameters without decoding frames: a 720p H.264 probe decodes several, 3x the open time),
        # and failing that the full probe
        container = av.open(str(path), options=_SMALL_PROBE)
        if container.format.name == _MOV_FAMILY and all(_has_parameters(s) for s in container.streams):
            return container
        container.close()
        container = av.open(str(path), options={"skip_frame": "all"})
        if all(_has_parameters(s) for s in container.streams):
            return container
        container.close()
        return av.open(str(path))
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot open ({err})") from None


class _Handoff(threading.local):
    """The container of the last mp4 whose audio was read, left open for a `read_frame` of the same
    file (a training item reads the audio window, then a frame: one open instead of two). Only the
    video side is reused: the audio is always decoded on a fresh container (FFmpeg's AAC decoder
    draws its noise-substitution samples from a state that a seek does not reset, so reused audio
    would depend on what was read before); the video decoder is untouched until read_frame seeks."""

    entry: tuple | None = None

    def put(self, key, container) -> None:
        self.drop()
        self.entry = (key, os.getpid(), container)

    def take(self, key):
        """The container left for `key` by this process (a forked worker never reuses its parent's)."""
        entry, self.entry = self.entry, None
        if entry is None:
            return None
        if entry[0] == key and key is not None and entry[1] == os.getpid():
            return entry[2]
        entry[2].close()
        return None

    def drop(self) -> None:
        if self.entry is not None:
            self.entry[2].close()
            self.entry = None


_HANDOFF = _Handoff()


def _file_key(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


_DISCARD = av.stream.Discard


def _only(container, stream) -> None:
    """Let the demuxer skip every stream but `stream`. The packets of the kept stream are the same;
    the mp4 demuxer then neither reads nor copies the others' samples (~15 % of an audio window's
    read on a 720p clip). Each reader sets it for its own stream (a handed-off container too)."""
    for other in container.streams:
        other.discard = _DISCARD.default if other.index == stream.index else _DISCARD.all


def _has_parameters(stream) -> bool:
    if stream.type == "video":
        return bool(stream.codec_context.width and stream.codec_context.height)
    if stream.type == "audio":
        return bool(stream.codec_context.sample_rate and stream.codec_context.channels)
    return True


def _stream_seconds(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def probe(path: str | Path) -> MediaInfo:
    """Streams, rates and durations of a media file (stills: size only, duration 0)."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        width, height = _read_image(path).shape[1::-1]
        return MediaInfo(str(path), 0.0, video_frames=1, video_size=(width, height))
    with _open(path) as container:
        info = MediaInfo(str(path), 0.0)
        if container.streams.audio:
            a = container.streams.audio[0]
            info.audio_rate, info.audio_channels = a.rate, a.channels
            info.audio_duration, info.audio_codec = _stream_seconds(a), a.codec_context.name
        if container.streams.video:
            v = container.streams.video[0]
            info.video_fps = float(v.average_rate) if v.average_rate else None
            info.video_frames = v.frames or None
            info.video_size = (v.codec_context.width, v.codec_context.height)
            info.video_duration, info.video_codec = _stream_seconds(v), v.codec_context.name
        durations = [d for d in (info.audio_duration, info.video_duration) if d]
        if not durations and container.duration:
            durations = [container.duration / 1e6]
        info.duration = max(durations) if durations else 0.0
    return info


def _decode_audio(container, path: Path, t0: float, t1: float) -> tuple[np.ndarray, float, int, bool]:
    """Mono float32 samples at the file's rate covering [t0, t1], their start time, the rate, and
    whether decoding stopped at t1 (False: the stream ended first)."""
    stream = container.streams.audio[0]
    rate = stream.rate
    _only(container, stream)
    seeked = t0 > _SEEK_AFTER_S
    if seeked:
        container.seek(int((t0 - 1.0) * av.time_base))
    # decoding from the start, the samples begin at the stream's start time; FFmpeg's vorbis decoder
    # labels its first frame pts=256 in some files although its samples start at 0 (libsndfile agrees)
    stream_start = float(stream.start_time * stream.time_base) if stream.start_time is not None else None
    to_float = av.AudioResampler(format="fltp")  # keep rate and layout; ints -> floats in [-1, 1]
    fifo = av.AudioFifo()  # the frames' samples are copied in C, read back once: no per-frame Python arrays
    start, stopped, n, tb, planar = None, False, 0, None, None
    for frame in container.decode(stream):
        pts = frame.pts
        if pts is not None and tb is None:  # one time base per stream (reading it builds a Fraction)
            tb = frame.time_base
        if pts is None or tb is None:
            ts = start + n / rate if start is not None else 0.0
        else:
            ts = pts * tb.numerator / tb.denominator  # == float(pts * tb): int/int rounds exactly
        if ts > t1 + _MARGIN_S:
            stopped = True
            break
        if planar is None:  # float planar frames (AAC, Vorbis, Opus decoders) are taken as they are
            planar = frame.format.name == "fltp"
        for out in ([frame] if planar else to_float.resample(frame)):
            if start is None:
                start = ts if seeked or stream_start is None else stream_start
            out.pts = None  # the FIFO checks pts continuity; times are tracked here
            fifo.write(out)
            n += out.samples
    if not n:
        raise MediaError(f"{path}: no audio samples decoded")
    samples = fifo.read().to_ndarray()  # (C, N) float32
    if len(samples) == 2:  # stereo: numpy's mean over axis 0 is (a + b) / 2, computed here without its overhead
        return (samples[0] + samples[1]) / np.float32(2), start, rate, stopped
    return samples.mean(axis=0), start, rate, stopped  # (N,) channels averaged


def _declared_end(stream) -> float | None:
    seconds = _stream_seconds(stream)
    if seconds is None:
        return None
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    return start + seconds


def _pyav_segment(path: Path, t0: float, t_end: float) -> tuple[np.ndarray, float, int, float]:
    """(mono samples at the file's rate, time of the first, rate, end of the audio) via PyAV."""
    container = _open(path)
    try:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio stream")
        try:
            samples, start, orig_rate, stopped = _decode_audio(container, path, t0, t_end)
        except av.error.FFmpegError as err:
            raise MediaError(f"{path}: audio decoding failed ({err})") from None
        declared = _declared_end(container.streams.audio[0])
    except BaseException:
        container.close()
        raise
    if container.streams.video:
        _HANDOFF.put(_file_key(path), container)  # for the item's read_frame (closed by the next read)
    else:
        container.close()
    decoded_end = start + len(samples) / orig_rate
    if not stopped and declared is not None and decoded_end < min(t_end, declared) - _TRUNCATION_TOL_S:
        raise MediaError(f"{path}: truncated or corrupt: audio ends at {decoded_end:.3f} s "
                         f"but the stream declares {declared:.3f} s")
    return samples, start, orig_rate, decoded_end


def _soundfile_segment(path: Path, t0: float, t_end: float) -> tuple[np.ndarray, float, int, float] | None:
    """The same through libsndfile (wav/flac/ogg; 25x faster than PyAV on short files), reading only
    the window plus margins; None when libsndfile cannot read the file (PyAV then tries)."""
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError):
        return None
    rate, frames = info.samplerate, info.frames
    cut = _WAV_DATA_CUT.search(info.extra_info or "")  # libsndfile: "data : 96000 (should be 59956)"
    if cut and int(cut.group(2)) < int(cut.group(1)):
        declared = frames / rate * int(cut.group(1)) / max(int(cut.group(2)), 1)
        raise MediaError(f"{path}: truncated or corrupt: the header declares {declared:.3f} s of audio, "
                         f"the file holds {frames / rate:.3f} s")
    first = min(frames, max(0, int(math.floor((t0 - 2 * _MARGIN_S) * rate))))
    first -= first % _grid_step(rate)  # read_audio aligns its crop to the output grid
    last = frames if math.isinf(t_end) else min(frames, int(math.ceil((t_end + _MARGIN_S) * rate)))
    if last <= first:
        return np.zeros(0, dtype=np.float32), first / rate, rate, frames / rate
    try:
        data, _ = soundfile.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)  # (n, C)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise MediaError(f"{path}: audio decoding failed ({err})") from None
    if len(data) < last - first - _TRUNCATION_TOL_S * rate:  # e.g. a FLAC whose frames stop early
        raise MediaError(f"{path}: truncated or corrupt: audio ends at {(first + len(data)) / rate:.3f} s "
                         f"but the header declares {frames / rate:.3f} s")
    return data.mean(axis=1), first / rate, rate, frames / rate  # channels averaged


def _grid_step(orig_rate: int, rate: int = SAMPLE_RATE) -> int:
    """Input samples between two instants on both the input grid and the k / rate output grid
    (1 when that period is longer than the crop margin allows)."""
    step = orig_rate // math.gcd(orig_rate, rate)
    return step if step <= _MARGIN_S * orig_rate else 1


def read_audio(path: str | Path, t0: float = 0.0, t1: float | None = None,
               rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Samples of [t0, t1) (seconds in the file's timeline) as float32 `(n,)` at `rate`, mono.

    The window is clipped to the file; a window with no samples raises MediaError. Use
    `audio.pad_or_trim` to reach the 48000 samples of a model input. wav/flac/ogg are read with
    libsndfile, everything else (mp4, ...) with PyAV; both give the same samples.
    """
    return read_audio_span(path, t0, t1, rate)[0]


def read_audio_span(path: str | Path, t0: float = 0.0, t1: float | None = None,
                    rate: int = SAMPLE_RATE) -> tuple[torch.Tensor, float, float]:
    """`read_audio`'s samples, the time of the first one (a multiple of 1/rate) and the end of
    the audio in the file (or of the decoded part when decoding stopped after t1)."""
    path = Path(path)
    t_end = math.inf if t1 is None else t1
    segment = _soundfile_segment(path, t0, t_end) if path.suffix.lower() in SOUNDFILE_SUFFIXES else None
    samples, start, orig_rate, file_end = segment if segment is not None else _pyav_segment(path, t0, t_end)
    # crop at the original rate with a margin, starting on a sample whose time is a multiple of
    # 1/rate: the output samples then sit at k / rate in the file, whatever t0 (the prepared form's
    # whole-file resampling gives the same samples)
    first = max(0, int(math.floor((t0 - _MARGIN_S - start) * orig_rate)))
    step, base = _grid_step(orig_rate, rate), int(round(start * orig_rate))  # base: index of samples[0]
    first = max(0, (base + first) // step * step - base)
    last = len(samples) if t1 is None else min(len(samples), int(math.ceil((t1 + _MARGIN_S - start) * orig_rate)))
    if last <= first:
        raise MediaError(f"{path}: no audio in [{t0:.3f}, {t_end:.3f}] s "
                         f"(audio covers [{start:.3f}, {file_end:.3f}] s)")
    wave = resample(torch.from_numpy(samples[first:last].copy()), orig_rate, rate)  # (m,) at `rate`
    offset = start + first / orig_rate  # time of wave[0]
    j0 = max(0, int(round((t0 - offset) * rate)))
    j1 = int(round((min(t_end, file_end) - offset) * rate))
    wave = wave[j0:max(j0, j1)]
    if wave.numel() == 0:
        raise MediaError(f"{path}: no audio in [{t0:.3f}, {t_end:.3f}] s "
                         f"(audio covers [{start:.3f}, {file_end:.3f}] s)")
    return wave.contiguous(), offset + j0 / rate, file_end


def _read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))  # (H, W, 3) uint8
    except (OSError, ValueError) as err:
        raise MediaError(f"{path}: cannot read image ({err})") from None


def _frame_time(frame, index: int, fps: float) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base)
    return index / fps


FRAME_RULES = ("nearest", "keyframe")  # "nearest": today's default; "keyframe": the official rule (spec 1.2)


def read_frame(path: str | Path, t: float | None = None, rule: str = "nearest",
               short_side: int | None = None, threads: int = 1) -> np.ndarray:
    """RGB uint8 `(H, W, 3)`: a still image, or the video frame chosen for time `t`.

    rule "nearest" (default): the frame whose timestamp is nearest `t` (ties: the earlier one).
    rule "keyframe": the last keyframe whose timestamp is at or before `t` (the first frame when
    there is none) - the official VideoReader's first frame after `container.seek(t)` (spec 1.2),
    which on the official re-encodes (a keyframe every 16 frames) is at most 15 frames before `t`.
    Only the chosen frame is converted to RGB. `short_side`: the decoder's scaler (swscale,
    bilinear) brings a larger frame's short side down to it in the same pass as the RGB
    conversion (the long side keeps the aspect as `transforms.short_side_size`); None keeps the
    decoded size. `threads` > 1: FFmpeg frame+slice threads (lower latency for one reader; with a
    DataLoader worker per core they only add overhead, hence 1). Deterministic: the same arguments always give the same frame. `t=None`: the first
    frame.
    """
    if rule not in FRAME_RULES:
        raise ValueError(f"frame rule {rule!r}: choose from {FRAME_RULES}")
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _scale_still(_read_image(path), short_side)
    container = _HANDOFF.take(_file_key(path)) or _open(path)
    with container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        _only(container, stream)
        fps = float(stream.average_rate) if stream.average_rate else 25.0
        try:
            best = None if t is None else _indexed_frame(container, stream, t, rule, threads)
            if best is None:  # first frame, or no usable timestamps: decode in order from the start
                container.seek(0)
                best = _sequential_frame(container, stream, t, fps, rule)
        except av.error.FFmpegError as err:
            raise MediaError(f"{path}: video decoding failed ({err})") from None
    if best is None:
        raise MediaError(f"{path}: no video frames decoded")
    return _to_rgb(best, short_side)


def _scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(h, w) with the short side brought down to `short_side` (never up), as Resize(int)."""
    if short_side is None or min(height, width) <= short_side:
        return height, width
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def _to_rgb(frame, short_side: int | None) -> np.ndarray:
    if isinstance(frame, np.ndarray):
        return frame
    height, width = _scaled_size(frame.height, frame.width, short_side)
    if (height, width) == (frame.height, frame.width):
        return frame.to_ndarray(format="rgb24")
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR").to_ndarray()


def _scale_still(image: np.ndarray, short_side: int | None) -> np.ndarray:
    height, width = _scaled_size(*image.shape[:2], short_side)
    if (height, width) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _choose(times: list[float], t: float, rule: str, keyframes: list[bool]) -> int | None:
    """Index into `times` of the frame that `rule` picks for `t` (None: no candidate)."""
    if rule == "keyframe":
        before = [i for i, ts in enumerate(times) if keyframes[i] and ts <= t]
        return max(before, key=lambda i: times[i]) if before else None
    return min(range(len(times)), key=lambda i: (abs(times[i] - t), times[i])) if times else None


def _indexed_frame(container, stream, t: float, rule: str, threads: int = 1):
    """The chosen frame, found from the packets' timestamps before decoding anything.

    Seeks to the keyframe at or before `t`, reads the packets (cheap) up to the last one that can
    be the choice, then decodes only what the choice needs: the packets from that keyframe to the
    chosen one in decode order, skipping the non-reference frames (H.264 nal_ref_idc 0: nothing
    predicts from them, so the chosen frame decodes bit-identically) except the chosen frame
    itself, and (`h264.skip_plan`, from the slice headers) the reference B-frames that no frame the
    choice depends on names in its reference lists: x264's default GOP makes a quarter of all
    frames such B-pyramid references, ~30 % of the decode time of a frame late in a clip. Where
    the plan cannot prove the result identical it declines and every reference frame is decoded.
    None when the stream has no usable timestamps (the caller decodes in order instead).
    """
    tb = stream.time_base
    if tb is None:
        return None
    for back in (0.0, 1.0, 3.0, 10.0, math.inf):  # a keyframe whose pts is after t: seek earlier
        start = max(t - back, 0.0)
        container.seek(int(start / tb) if start > 0 else 0, stream=stream, backward=True)
        packets = _packets_from_keyframe(container, stream, t)
        if packets is None:
            return None
        if not packets:
            if start == 0.0:
                return None
            continue
        key_time = packets[0].pts * tb.numerator / tb.denominator
        if key_time <= t or start == 0.0:
            break
    num, den = tb.numerator, tb.denominator  # int / int: the correctly rounded float(pts * tb), no Fraction
    times = [p.pts * num / den for p in packets]
    _check_not_truncated(container, stream, max(times), t)
    chosen = _choose(times, t, rule, [p.is_keyframe for p in packets])
    if chosen is None:  # nothing at or before t (the first keyframe is after t): the first frame
        chosen = min(range(len(times)), key=lambda i: times[i])
    target_pts = packets[chosen].pts
    ctx = stream.codec_context
    skip = ctx.name == "h264" and threads <= 1  # frame threads take skip_frame per thread: decode all
    if threads > 1:
        stream.thread_type, ctx.thread_count = "AUTO", threads
    else:
        stream.thread_type = "NONE"
    plan = None
    if skip:
        try:  # also skip the reference B-frames that the chosen frame provably does not need
            plan = h264.skip_plan(ctx.extradata, packets, chosen)
        except h264.Unsupported:  # also headers it cannot parse (a damaged file): decode every reference
            plan = None  # frame, as without the plan (errors then surface there)
    found = None
    for i, packet in enumerate(packets[:chosen + 1]):
        ctx.skip_frame = plan[i] if plan else "NONREF" if skip and i != chosen else "DEFAULT"
        for frame in ctx.decode(packet):
            if frame.pts == target_pts:
                found = frame
    ctx.skip_frame = "DEFAULT"
    if found is None:
        for frame in ctx.decode(None):  # drain the reorder buffer
            if frame.pts == target_pts:
                found = frame
    return found


def _packets_from_keyframe(container, stream, t: float):
    """Packets in decode order from the keyframe the demuxer landed on, through the last packet
    whose frame can be chosen for `t`; None when a packet lacks pts or dts."""
    tb = stream.time_base
    num, den = tb.numerator, tb.denominator
    packets: list = []
    first_at_or_after = math.inf  # smallest pts >= t seen so far
    for packet in container.demux(stream):
        if packet.size == 0 and packet.pts is None:  # the demuxer's flush packet
            break
        if packet.pts is None or packet.dts is None:
            return None
        if not packets and not packet.is_keyframe:
            continue  # the demuxer may land before a keyframe
        ts, dts = packet.pts * num / den, packet.dts * num / den  # == float(pts * tb), without Fractions
        if packets and dts >= first_at_or_after and ts > t:
            break  # every later packet shows after the first frame at or after t
        packets.append(packet)
        if ts >= t:
            first_at_or_after = min(first_at_or_after, ts)
    return packets


def _sequential_frame(container, stream, t, fps, rule):
    """Decode from the current position in display order (today's path, used for `t=None` and
    streams without timestamps), converting nothing but the choice."""
    best, best_dt, ts = None, math.inf, None
    for i, frame in enumerate(container.decode(stream)):
        ts = _frame_time(frame, i, fps)
        if t is None:
            return frame
        if rule == "keyframe":
            if frame.key_frame and ts <= t or best is None:
                best = frame
            if ts >= t:
                return best
            continue
        dt = abs(ts - t)
        if dt < best_dt:
            best, best_dt = frame, dt
        if ts >= t:
            return best
    if best is not None:
        _check_not_truncated(container, stream, ts, t)
    return best


def _check_not_truncated(container, stream, last: float, t: float) -> None:
    """Frames that stop before both `t` and the declared end mean a cut file."""
    fps = float(stream.average_rate) if stream.average_rate else 25.0
    declared = _declared_end(stream)
    if declared is not None and last < min(t, declared - 1 / fps) - 1.5 / fps:
        raise MediaError(f"{container.name}: truncated or corrupt: video frames end at {last:.3f} s "
                         f"but the stream declares {declared:.3f} s")


def duration(path: str | Path) -> float:
    """Seconds of audio (or of the longest stream) in a media file."""
    info = probe(path)
    return info.audio_duration or info.duration
