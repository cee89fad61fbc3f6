"""Frozen copy of avfusion/media.py before issue 16 (commit 9cd7d3d), the "today" path of
benchmarks/data_throughput.py: every frame decoded between the seek point (1 s before t) and t
was converted to RGB, decoding was single-threaded and at full resolution, the container probe
decoded frames, and audio went through a per-frame resampler. Do not use outside benchmarks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile
import torch
from PIL import Image

from avfusion.audio import SAMPLE_RATE, resample

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg"}
_SEEK_AFTER_S = 5.0  # windows starting later than this seek instead of decoding from the start
_MARGIN_S = 0.05  # extra audio decoded on each side so resampling has no edge effects
_TRUNCATION_TOL_S = 0.15  # decoded audio may end this much before the declared end (codec padding)


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


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (0 bytes)")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot open ({err})") from None


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
    seeked = t0 > _SEEK_AFTER_S
    if seeked:
        container.seek(int((t0 - 1.0) * av.time_base))
    # decoding from the start, the samples begin at the stream's start time; FFmpeg's vorbis decoder
    # labels its first frame pts=256 in some files although its samples start at 0 (libsndfile agrees)
    stream_start = float(stream.start_time * stream.time_base) if stream.start_time is not None else None
    to_float = av.AudioResampler(format="fltp")  # keep rate and layout; ints -> floats in [-1, 1]
    chunks, start, stopped = [], None, False
    for frame in container.decode(stream):
        if frame.pts is None or frame.time_base is None:
            ts = start + sum(c.shape[-1] for c in chunks) / rate if start is not None else 0.0
        else:
            ts = float(frame.pts * frame.time_base)
        if ts > t1 + _MARGIN_S:
            stopped = True
            break
        for out in to_float.resample(frame):
            data = out.to_ndarray().astype(np.float32)  # (C, n) planar
            if start is None:
                start = ts if seeked or stream_start is None else stream_start
            chunks.append(data.mean(axis=0))  # (n,) channels averaged
    if not chunks:
        raise MediaError(f"{path}: no audio samples decoded")
    return np.concatenate(chunks), start, rate, stopped


def _declared_end(stream) -> float | None:
    seconds = _stream_seconds(stream)
    if seconds is None:
        return None
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    return start + seconds


def _pyav_segment(path: Path, t0: float, t_end: float) -> tuple[np.ndarray, float, int, float]:
    """(mono samples at the file's rate, time of the first, rate, end of the audio) via PyAV."""
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio stream")
        try:
            samples, start, orig_rate, stopped = _decode_audio(container, path, t0, t_end)
        except av.error.FFmpegError as err:
            raise MediaError(f"{path}: audio decoding failed ({err})") from None
        declared = _declared_end(container.streams.audio[0])
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
    first = min(frames, max(0, int(math.floor((t0 - _MARGIN_S) * rate))))
    last = frames if math.isinf(t_end) else min(frames, int(math.ceil((t_end + _MARGIN_S) * rate)))
    if last <= first:
        return np.zeros(0, dtype=np.float32), first / rate, rate, frames / rate
    try:
        data, _ = soundfile.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)  # (n, C)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise MediaError(f"{path}: audio decoding failed ({err})") from None
    return data.mean(axis=1), first / rate, rate, frames / rate  # channels averaged


def read_audio(path: str | Path, t0: float = 0.0, t1: float | None = None,
               rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Samples of [t0, t1) (seconds in the file's timeline) as float32 `(n,)` at `rate`, mono.

    The window is clipped to the file; a window with no samples raises MediaError. Use
    `audio.pad_or_trim` to reach the 48000 samples of a model input. wav/flac/ogg are read with
    libsndfile, everything else (mp4, ...) with PyAV; both give the same samples.
    """
    path = Path(path)
    t_end = math.inf if t1 is None else t1
    segment = _soundfile_segment(path, t0, t_end) if path.suffix.lower() in SOUNDFILE_SUFFIXES else None
    samples, start, orig_rate, file_end = segment if segment is not None else _pyav_segment(path, t0, t_end)
    # crop at the original rate with a margin, on an integer sample grid
    first = max(0, int(math.floor((t0 - _MARGIN_S - start) * orig_rate)))
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
    return wave.contiguous()


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


def read_frame(path: str | Path, t: float | None = None) -> np.ndarray:
    """RGB uint8 `(H, W, 3)`: a still image, or the video frame whose timestamp is nearest `t`.

    Deterministic: the same (path, t) always gives the same frame. `t=None` means the first frame.
    """
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


def duration(path: str | Path) -> float:
    """Seconds of audio (or of the longest stream) in a media file."""
    info = probe(path)
    return info.audio_duration or info.duration


# -- the item transforms before issue 16 (commit 9cd7d3d): float crop/resize of the whole frame, a normalize
# that rebuilt its constants, |STFT|^2 through abs().pow(2)
def legacy_normalize(image: torch.Tensor) -> torch.Tensor:
    from avfusion.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image - mean) / std


def legacy_train_image(frame: np.ndarray, size: int) -> torch.Tensor:
    from avfusion import transforms

    (image,) = transforms._train_geometry([(transforms.to_tensor(frame), False)], size, None)
    return legacy_normalize(image)


def legacy_eval_image(frame: np.ndarray, size: int) -> torch.Tensor:
    from avfusion import transforms

    short = int(size / transforms.EVAL_CROP_FRACTION)
    return legacy_normalize(transforms._eval_geometry(transforms.to_tensor(frame), size, short, nearest=False))


def legacy_log_mel(wave: torch.Tensor) -> torch.Tensor:
    from avfusion import audio

    power = audio.stft(wave.float()).abs().pow(2.0)
    fb = audio._mel_filterbank(audio.N_FREQS, audio.N_MELS, audio.SAMPLE_RATE, 0.0, audio.SAMPLE_RATE / 2).to(power)
    mel = torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)
    return torch.log10(mel + audio.LOG_EPS)[..., :-1].unsqueeze(-3)
