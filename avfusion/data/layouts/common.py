"""Shared pieces of the layout parsers: file naming rules, cheap media probes, the skip report,
repo metadata lookup, fixed evaluation pairs, and writing the manifest folder.

Every parser follows the same pattern:

    report, media = LayoutReport(), MediaCheck(check_media)
    for item in metadata:
        media.add_video_clip(rows, report, path, 10.0, clip_id=..., split=..., label=...)  # kept, or a counted
        ...                                               # skip with its reason, never silent (stills + audio:
    finish(out, rows, report, classes, pairs)             # media.frame_and_audio); manifest.csv, classes.txt,
                                                          # report.json, pairs.csv
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import random
from pathlib import Path

from ...io import atomic_write_csv
from ...progress import Progress
from ..manifest import PAIR_COLUMNS, SkipReport, write_manifest

METADATA_DIR = Path(__file__).resolve().parent / "metadata"
CLIP_SECONDS = 10  # VGGSound / AudioSet clip files hold 10 s (`{start:06d}_{start+10:06d}`)


class LayoutReport(SkipReport):
    """SkipReport plus `details`: counts that are not row skips (dropped boxes, pair skips, ...)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.details: dict = {}

    def count(self, key: str, reason: str, n: int = 1) -> None:
        """Count a sub-row event (e.g. a corrupt box) under details[key][reason]."""
        bucket = self.details.setdefault(key, {})
        bucket[reason] = bucket.get(reason, 0) + n

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["details"] = self.details
        return out


# ----------------------------------------------------------------------------- naming rules

def vggsound_folder(label: str) -> str:
    """VGGSound class folder name, exactly as the official `get_vggsound`:
    ' ', '(', ')', ',' -> '_' ('playing violin, fiddle' -> 'playing_violin__fiddle')."""
    return label.replace(" ", "_").replace("(", "_").replace(")", "_").replace(",", "_")


def split_clip_key(key: str) -> tuple[str, int]:
    """'YTID_000030' (11-char YouTube id, '_', 6-digit start second) -> ('YTID', 30)."""
    key = key.strip()
    if len(key) < 13 or key[-7] != "_" or not key[-6:].isdigit():
        raise ValueError(f"clip key {key!r} is not 'YOUTUBEID_SSSSSS'")
    return key[:-7], int(key[-6:])


def clip_filename(ytid: str, start: int, end: int | None = None) -> str:
    """`{YTID}_{start:06d}_{end:06d}.mp4`; end defaults to start + 10 (VGGSound)."""
    end = start + CLIP_SECONDS if end is None else end
    return f"{ytid}_{start:06d}_{end:06d}.mp4"


# ----------------------------------------------------------------------------- metadata files

def metadata_file(name: str, override: str | Path | None = None) -> Path:
    """Path of a metadata file: `override` if given, else the copy of the official repo's
    `metadata/{name}` shipped (gzipped) in avfusion/data/layouts/metadata/."""
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"metadata file not found: {path}")
        return path
    for cand in (METADATA_DIR / name, METADATA_DIR / f"{name}.gz"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"metadata file {name!r} is not in {METADATA_DIR}; pass its path")


def read_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metadata file not found: {path}")
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8")


def read_csv(path: str | Path, skip: int = 0, skipinitialspace: bool = False) -> list[list[str]]:
    """Rows of a CSV (plain or .gz) after `skip` header lines; blank lines dropped."""
    reader = csv.reader(io.StringIO(read_text(path)), skipinitialspace=skipinitialspace)
    return [row for row in list(reader)[skip:] if row and any(x.strip() for x in row)]


def read_lines(path: str | Path) -> list[str]:
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def read_json(path: str | Path):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from None


# ----------------------------------------------------------------------------- media probes

def probe_av(path: Path, need_video: bool, need_audio: bool) -> tuple[float | None, str | None]:
    """Open a media file with PyAV, then check it as training reads it (check_training_media);
    -> (duration_s, None) or (None, reason)."""
    import av

    try:
        with av.open(str(path)) as container:
            if need_video and not container.streams.video:
                return None, "no video stream"
            if need_audio and not container.streams.audio:
                return None, "no audio stream"
            duration = None
            if container.duration is not None:
                duration = container.duration / 1e6
            else:
                stream = (container.streams.audio or container.streams.video)[0]
                if stream.duration is not None and stream.time_base is not None:
                    duration = float(stream.duration * stream.time_base)
            if duration is None or duration <= 0:
                return None, "zero or unknown duration"
    except Exception as err:  # PyAV raises many error types for broken files
        return None, f"unreadable media ({type(err).__name__})"
    return check_training_media(path, duration, need_video) if need_audio else (duration, None)


TRUNCATION_TOL_S = 0.15  # decoded audio may end this much before its header's end (codec padding)


def check_training_media(path: Path, duration: float, need_video: bool) -> tuple[float | None, str | None]:
    """Read what training reads: the whole audio track as the datasets decode it (finite samples,
    as long as its header says, covering the 3 s window the recipes draw) and, for a video, the
    frame at its middle. -> (usable duration: where the audio ends, if before `duration`; None)
    or (None, reason); reasons are categories, counted per reason in report.json."""
    import numpy as np

    from ...audio import CLIP_SECONDS as WINDOW_S, SAMPLE_RATE
    from ...media import MediaError, probe, read_audio, read_frame

    try:
        wave = read_audio(path)  # (n,) float32 at 16 kHz, the file's whole audio
    except MediaError as err:
        return None, "truncated or corrupt audio" if "truncated" in str(err) else "unreadable audio"
    if not np.isfinite(wave.numpy()).all():
        return None, "non-finite audio samples (NaN/inf)"
    audio_s = wave.numel() / SAMPLE_RATE
    declared = probe(path).audio_duration
    if declared is not None and audio_s < declared - TRUNCATION_TOL_S:
        return None, "truncated or corrupt audio"  # e.g. a wav cut short: fewer samples than its header
    if audio_s < min(WINDOW_S, duration) - TRUNCATION_TOL_S:
        return None, f"audio shorter than the {WINDOW_S:g} s window"
    if need_video:
        try:
            read_frame(path, min(duration, audio_s) / 2)
        except MediaError:
            return None, "undecodable video frame"
    return min(duration, audio_s), None


def probe_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """-> ((width, height), None) or (None, reason). Verifies the whole file when decoding."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            size = img.size
            img.load()  # decodes: catches truncated / corrupt files
        return size, None
    except Exception as err:
        return None, f"unreadable image ({type(err).__name__})"


def image_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """Header-only size read (cheap; used to convert normalised boxes even without check_media)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size, None
    except Exception as err:
        return None, f"unreadable image ({type(err).__name__})"


class MediaCheck:
    """Existence check always; decoding probe only when `check_media` (then cached per path)."""

    def __init__(self, check_media: bool):
        self.check_media = check_media
        self._cache: dict = {}

    def check(self, path: Path, kind: str) -> tuple[bool, object, str | None]:
        """kind: 'video' (video+audio streams), 'audio', 'image'. -> (ok, info, reason);
        info = duration (s) for media, (w, h) for images, None when not probed."""
        if not path.is_file():
            return False, None, f"missing {kind} file"
        if not self.check_media:
            return True, None, None
        key = (str(path), kind)
        if key not in self._cache:
            if kind == "image":
                self._cache[key] = probe_image(path)
            else:
                self._cache[key] = probe_av(path, need_video=kind == "video", need_audio=True)
        info, reason = self._cache[key]
        return reason is None, info, reason

    def frame_and_audio(self, frame: Path, audio: Path, report: SkipReport):
        """Still frame + audio file of one clip -> ((w, h), duration or None), or None after
        counting the skip (missing/unreadable image or audio) in `report`."""
        ok, size, reason = self.check(frame, "image")
        if ok:
            ok, duration, reason = self.check(audio, "audio")
        if not ok:
            report.skip(str(frame if "image" in reason else audio), reason)
            return None
        size = size or image_size(frame)[0]
        if size is None:
            report.skip(str(frame), "unreadable image")
            return None
        return size, duration

    def add_video_clip(self, rows: list[dict], report: SkipReport, path: Path, default_end, **fields) -> bool:
        """One clip stored as a video file: check it; if it is usable, append its manifest row (`video` =
        path, start 0, end = its probed duration or `default_end`, plus `fields`: clip_id, split, label, ...)
        and count it kept, else count the skip with its reason. Returns whether it was kept."""
        ok, duration, reason = self.check(path, "video")
        if not ok:
            report.skip(str(path), reason)
            return False
        rows.append({"video": str(path), "audio": "", "frame": "", "start": 0.0,
                     "end": round(duration, 3) if duration else default_end, **fields})
        report.keep()
        return True


def progress_for(total: int, desc: str) -> Progress:
    return Progress(total=total, desc=desc, every=max(1, total // 20))


# ----------------------------------------------------------------------------- fixed pairs

def fixed_pairs(rows: list[dict], seed: int = 0, group_key: str = "source") -> list[dict]:
    """One deterministic evaluation pair per clip: partner drawn (seeded) among clips of another
    class and another video. Used where the official code pairs at random even at evaluation."""
    rng = random.Random(seed)
    ordered = sorted(rows, key=lambda r: r["clip_id"])
    pairs = []
    group = lambda r: r.get(group_key) or r["clip_id"]  # noqa: E731
    valid = lambda a, b: a["label"] != b["label"] and group(a) != group(b)  # noqa: E731
    for row in ordered:
        other = next((c for c in (rng.choice(ordered) for _ in range(64)) if valid(row, c)), None)
        if other is None:  # rare: most clips share the class; search exhaustively
            candidates = [r for r in ordered if valid(row, r)]
            if not candidates:
                continue
            other = rng.choice(candidates)
        pairs.append({"pair_id": f"{len(pairs):05d}", "split": row["split"], "clip_id_1": row["clip_id"],
                      "clip_id_2": other["clip_id"], "sep_type": ""})
    return pairs


# ----------------------------------------------------------------------------- output

def finish(out: str | Path, rows: list[dict], report: LayoutReport, classes: list[str],
           pairs: list[dict] | None = None, desc: str = "") -> dict:
    """Write manifest.csv, classes.txt, report.json (+ pairs.csv) into `out`; print a summary."""
    out = Path(out)
    if pairs is not None:
        atomic_write_csv(out / "pairs.csv", pairs, PAIR_COLUMNS)
        report.details["pairs_kept"] = len(pairs)
    write_manifest(out, rows, report, classes)
    print(f"{desc}: {report.summary()} -> {out}", flush=True)
    return report.to_dict()
