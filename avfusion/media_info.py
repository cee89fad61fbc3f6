"""`avfusion media-info FILE...`: streams, durations, rates, and the model inputs each file gives.

    avfusion media-info clip.mp4 frame.jpg sound.ogg --image-size 224

For every file: its audio/video streams as PyAV sees them, then the shapes of the model inputs read
from the middle of the file (a (3, S, S) image and a (1, 128, 192) log-mel). A file that cannot be read
is reported with the reason (also audio with NaN/inf samples) and makes the command exit with status 3.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import audio, transforms
from .media import IMAGE_SUFFIXES, MediaError, probe, read_audio, read_frame


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--image-size", type=int, default=224, help="model image size S (default 224)")


def describe(path: Path, image_size: int = 224) -> list[str]:
    """Lines describing one file; raises MediaError when it cannot be read."""
    info = probe(path)
    lines = [f"{path}"]
    if info.audio_rate:
        lines.append(f"  audio: {info.audio_codec}, {info.audio_rate} Hz, {info.audio_channels} ch, "
                     f"{info.audio_duration or 0:.3f} s")
    if info.video_size:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            lines.append(f"  image: {info.video_size[0]}x{info.video_size[1]}")
        else:
            fps = f"{info.video_fps:.3f} fps" if info.video_fps else "unknown fps"
            lines.append(f"  video: {info.video_codec}, {info.video_size[0]}x{info.video_size[1]}, {fps}, "
                         f"{info.video_frames or '?'} frames, {info.video_duration or 0:.3f} s")
    centre = info.duration / 2
    if info.video_size:
        image = transforms.eval_image(read_frame(path, centre if info.duration else None), image_size)
        lines.append(f"  model image (frame at {centre:.3f} s): {tuple(image.shape)}")
    if info.audio_rate:
        t0 = max(0.0, centre - audio.CLIP_SECONDS / 2)
        wave = read_audio(path, t0, t0 + audio.CLIP_SECONDS)
        if not bool(wave.isfinite().all()):
            raise MediaError(f"{path}: {int((~wave.isfinite()).sum())} non-finite (NaN/inf) audio samples in "
                             f"[{t0:.3f}, {t0 + audio.CLIP_SECONDS:.3f}] s")
        spec = audio.log_mel(audio.pad_or_trim(wave))
        padded = "" if len(wave) >= audio.CLIP_SAMPLES else f", padded from {len(wave)} samples"
        lines.append(f"  model audio ([{t0:.3f}, {t0 + audio.CLIP_SECONDS:.3f}] s): {tuple(spec.shape)}, "
                     f"log-mel range [{spec.min():.2f}, {spec.max():.2f}]{padded}"
                     f"{', SILENT' if audio.is_silent(wave) else ''}")
    if not (info.audio_rate or info.video_size):
        lines.append("  no audio or video stream")
    return lines


def main(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            print("\n".join(describe(path, args.image_size)))
        except MediaError as err:
            print(f"{path}\n  ERROR: {err}")
            failed += 1
    if failed:
        print(f"{failed} of {len(args.files)} files could not be read")
    return 3 if failed else 0  # 3: data (avfusion.cli)
