"""Prepared media: every clip's frames (JPEG at the short side the transforms need) and its audio
(16 kHz mono float32), decoded once and packed in a few large shards that the Datasets read fast.

    avfusion data cache --manifest data/vggsound --out data/vggsound-prepared --workers 16
    ds = AVClipDataset("data/vggsound-prepared", "train", train=True, image_size=224)  # reads shards

<out> is a manifest folder like its source, so every task reads it unchanged:
    manifest.csv, classes.txt,      the source's, path columns absolute, an empty `end` filled as the
    report.json, pairs.csv          raw path would probe it; unreadable clips left out (see below)
    prepared/meta.json              settings (short side, frame stride, JPEG quality) and the shard plan
    prepared/shard-00000.tar        per clip `cNNNN.audio.f32` (the whole file's audio),
                                    `cNNNN.mel.f32` (its mel power, one row of 128 per 250-sample hop),
                                    `cNNNN.peak.f32` (peak |x| per 250-sample block),
                                    `cNNNN.edge.f32` (per hop-grid window, the mel power of its 3
                                    reflect-padded STFT frames) and
                                    `cNNNN.fNNNN.jpg` or `.rgb` (the frames kept), `cNNNN.annot.jpg` (the frame
                                    at `frame_time`); a plain tar, readable by tar / WebDataset tools
    prepared/shard-00000.json       offsets, frame times, audio start; renamed into place after the
                                    tar: its presence marks the shard complete (a rerun skips it)
    prepared/report.json            clips prepared, unreadable clips (count, clip_id, file, reason)

Frame format: JPEG (default, `jpeg_quality` 90) or, with `frame_format="raw"` (`--frame-format raw`),
the decoder's uint8 RGB pixels as they are (`cNNNN.fNNNN.rgb`, shape in the index): no decoding per
item (about 1 ms per item less at short side 256) and the raw path's pixels exactly, for H x W x 3 bytes
per kept frame (349 kB at 256 x 455, ~17x the JPEG's ~20 kB; about 5.6 MB per 10 s clip at 25 fps and
stride 16, ~1.1 TB for 200 000 such clips against ~65 GB as JPEG).

Frame-choice rule (README "Prepared media"): of a video, the frames whose display index is a
multiple of `frame_stride` (default 16, the official re-encode's keyframe interval) are kept, and
an item at time t gets the last kept frame at or before t (the first kept frame if none): the
official keyframe rule, and exactly what `read_frame(video, t, rule="keyframe", short_side=S)` gives
on a video with a keyframe every `frame_stride` frames. These frames are scaled by the decoder's
scaler to short side S (as `read_frame(short_side=S)`), then JPEG-encoded (quality 90: pixels
within a few grey levels of the raw frame). Frames that masks or boxes belong to stay full size
and lossless: a still `frame` is stored as its own file's bytes, and a row with `frame_time` keeps
the frame nearest it (raw rule) as PNG.
Audio rule: the window [t0, t1) is cut from the whole file's 16 kHz audio on the sample grid
k / 16000 s, which is where `read_audio` puts its samples too: the same samples as the raw path.
Window rule (format 2): a Dataset item's 3 s window that lies inside the audio starts on the hop grid,
sample 250 q of the clip's audio (`PreparedMedia.snap`: the grid point nearest the raw rule's start,
at most 125 samples = 7.8 ms away), so its log-mel is read from the clip's stored mel power instead of
an STFT per item (`PreparedMedia.log_mel`, 0.3-0.4 ms instead of ~1 ms): bit for bit `log_mel` of the
raw samples of that window without a gain; with the train gain, float rounding apart (frames the
official clamp reaches are computed from the clamped wave). Windows the raw path pads are left as they
are and computed from the wave. Storage: the mel power adds 2 bytes per audio sample (+50 % over the
float32 audio, ~33 kB per second of clip).
Format 3 also stores, for every hop-grid window, the mel power of its STFT frames 0, 1 and 191 (the
ones that read the window's reflect padding; `clip_edge_power`, computed by the same call the reader of
a format-2 folder makes), so an item reads all 192 frames and computes none unless the gain clips
(~0.3 ms less per item on a cold cache). Storage: 1 536 bytes per window start, i.e. ~6.1 bytes per
audio sample past the first 3 s (~100 kB per second of clip; 0.69 MB per 10 s clip, against 0.64 MB
of float32 audio and 0.33 MB of mel power).
"""
from __future__ import annotations

import csv
import fcntl
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import tarfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from .. import audio as audio_lib
from ..audio import SAMPLE_RATE
from ..io import atomic_write_csv, atomic_write_json, read_json
from ..media import MediaError, _check_not_truncated, _open, _to_rgb, duration, read_audio_span, read_frame
from ..progress import Progress, timestamp
from .manifest import read_manifest

FORMAT_VERSION = 3  # 2: + each clip's mel power (`mel.f32`) and block peaks (`peak.f32`), the hop-grid window;
# 3: + the mel power of the 3 reflect-padded STFT frames of every hop-grid window (`edge.f32`)
DEFAULTS = {"short_side": 256, "frame_stride": 16, "jpeg_quality": 90, "clips_per_shard": 64, "frame_format": "jpeg"}
FRAME_FORMATS = ("jpeg", "raw")  # raw: uint8 RGB arrays, no decoding per item, ~17x the JPEG bytes (README)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


# -- preparing ------------------------------------------------------------------------------------
def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _video_frames(path: str, stride: int, short_side: int) -> list[tuple[float, np.ndarray]]:
    """(time, RGB) of the frames whose display index is a multiple of `stride`, decoded in order."""
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # sequential decoding of the whole clip: frame threads help
        kept, ts = [], None
        try:
            for i, frame in enumerate(container.decode(stream)):
                ts = float(frame.pts * frame.time_base) if frame.pts is not None else i / 25.0
                if i % stride == 0:
                    kept.append((ts, _to_rgb(frame, short_side)))
        except av.error.FFmpegError as err:
            raise MediaError(f"{path}: video decoding failed ({err})") from None
        if not kept:
            raise MediaError(f"{path}: no video frames decoded")
        _check_not_truncated(container, stream, ts, math.inf)
    return kept


def _prepare_clip(row: dict, settings: dict) -> tuple[dict, list[tuple[str, bytes]]]:
    """(index entry, tar members) of one clip; raises MediaError when it cannot be read."""
    short, stride, quality = settings["short_side"], settings["frame_stride"], settings["jpeg_quality"]
    audio_path = row.get("audio") or row["video"]
    wave, audio_start, audio_end = read_audio_span(audio_path, 0.0, None)  # (n,) the whole file
    entry = {"audio_start": audio_start, "audio_end": audio_end, "audio_samples": int(wave.numel())}
    members = [("audio.f32", wave.numpy().astype("<f4").tobytes())]
    if wave.numel() >= audio_lib.CLIP_SAMPLES and bool(torch.isfinite(wave).all()):  # else: windows from the wave
        power, peaks = clip_mel_power(wave)
        edges = clip_edge_power(wave)
        entry["mel_frames"], entry["edge_windows"] = int(power.shape[0]), int(edges.shape[0])
        members += [("mel.f32", power.numpy().astype("<f4").tobytes()), ("peak.f32", peaks.numpy().astype("<f4").tobytes()),
                    ("edge.f32", edges.numpy().astype("<f4").tobytes())]
    if row.get("end") in (None, ""):  # what _ManifestClips.span would probe on the raw path
        start = float(row["start"]) if row.get("start") not in (None, "") else 0.0
        entry["end"] = str(start + duration(audio_path))
    if row.get("frame"):  # the still's own bytes: the same pixels as the raw path, boxes still fit
        read_frame(row["frame"])  # unreadable stills fail here, not in training
        members.append(("annot" + Path(row["frame"]).suffix.lower(), Path(row["frame"]).read_bytes()))
        entry["frame_times"] = []
        return entry, members
    frames = _video_frames(row["video"], stride, short)
    entry["frame_times"] = [ts for ts, _ in frames]
    entry["frame_shapes"] = [list(img.shape) for _, img in frames]
    if settings.get("frame_format", "jpeg") == "raw":  # the decoder's pixels as they are: (H, W, 3) uint8
        members += [(f"f{k:04d}.rgb", np.ascontiguousarray(img).tobytes()) for k, (_, img) in enumerate(frames)]
    else:
        members += [(f"f{k:04d}.jpg", _jpeg(img, quality)) for k, (_, img) in enumerate(frames)]
    if row.get("frame_time") not in (None, ""):  # the annotated frame, full size and lossless (PNG)
        annotated = read_frame(row["video"], float(row["frame_time"]))
        buf = io.BytesIO()
        Image.fromarray(annotated).save(buf, "PNG")
        members.append(("annot.png", buf.getvalue()))
    return entry, members


def clip_mel_power(wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole clip's mel power, one row per hop (`(1 + n // 250, 128)`, row m = the STFT frame centred on
    sample 250 m), and the peak |x| of each 250-sample block (`(ceil(n / 250),)`): what
    `PreparedMedia.log_mel` slices a hop-grid window's log-mel from."""
    power = audio_lib.mel_power(wave.float()).T.contiguous()  # (frames, 128)
    n, hop = wave.numel(), audio_lib.HOP
    padded = torch.nn.functional.pad(wave.abs(), (0, -n % hop))
    return power, padded.view(-1, hop).amax(dim=1)


def clip_edge_power(wave: torch.Tensor) -> torch.Tensor:
    """`(Q, 3, 128)`: for every hop-grid window of the clip (start 250 q, q = 0 .. Q - 1, the 3 s inside the
    audio), the mel power of its STFT frames 0, 1 and 191, the ones that read the window's reflect padding:
    computed exactly as `PreparedMedia.log_mel` computes them from the window's ends (same samples, same
    call, one window at a time), so a reader takes them as stored, bit for bit."""
    samples = wave.float().numpy().astype("<f4")
    size, hop, index = audio_lib.CLIP_SAMPLES, audio_lib.HOP, _edge_index()
    out = torch.empty(hop_grid_windows(samples.size), 3, audio_lib.N_MELS)
    for q in range(out.shape[0]):
        j0 = q * hop
        ends = np.concatenate([samples[j0:j0 + _EDGE], samples[j0 + size - _EDGE:j0 + size]])
        out[q] = audio_lib.frames_mel_power(torch.from_numpy(ends[index])).T
    return out


def prepare_shard(job: tuple) -> dict:
    """Write one shard (tar, then its JSON index, each renamed into place); returns its summary."""
    index, rows, folder, settings = job
    torch.set_num_threads(1)
    folder = Path(folder)
    name = shard_name(index)
    tmp_tar = folder / f".{name}.tar.{os.getpid()}.tmp"
    clips, failed = {}, {}
    with tarfile.open(tmp_tar, "w", format=tarfile.USTAR_FORMAT) as tar:
        for k, row in enumerate(rows):
            try:
                entry, members = _prepare_clip(row, settings)
            except (MediaError, OSError, ValueError) as err:
                failed[row["clip_id"]] = {"file": row.get("video") or row.get("audio") or row.get("frame"),
                                          "reason": str(err)}
                continue
            offsets = {}
            for suffix, data in members:
                info = tarfile.TarInfo(f"c{k:04d}.{suffix}")
                info.size, info.mtime = len(data), 0
                before = tar.offset
                tar.addfile(info, io.BytesIO(data))
                header = tar.offset - before - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                offsets[suffix] = [before + header, len(data)]  # where the member's bytes start
            entry["members"] = offsets
            clips[row["clip_id"]] = entry
    with open(tmp_tar, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp_tar, folder / f"{name}.tar")
    summary = {"shard": index, "tar": f"{name}.tar", "tar_bytes": (folder / f"{name}.tar").stat().st_size,
               "clips": clips, "failed": failed}
    atomic_write_json(folder / f"{name}.json", summary)  # last: marks the shard complete
    return {"shard": index, "clips": len(rows), "failed": len(failed)}


def _complete(folder: Path, index: int) -> bool:
    meta, tar = folder / f"{shard_name(index)}.json", folder / f"{shard_name(index)}.tar"
    if not (meta.is_file() and tar.is_file()):
        return False
    try:
        return read_json(meta)["tar_bytes"] == tar.stat().st_size
    except (ValueError, KeyError, OSError):
        return False


def _plan_id(rows: list[dict], settings: dict) -> str:
    text = json.dumps([settings, [[r["clip_id"], r.get("video"), r.get("audio"), r.get("frame")] for r in rows]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_manifest(manifest_dir, out_dir, workers: int = 1, short_side: int = DEFAULTS["short_side"],
                   frame_stride: int = DEFAULTS["frame_stride"], jpeg_quality: int = DEFAULTS["jpeg_quality"],
                   clips_per_shard: int = DEFAULTS["clips_per_shard"], frame_format: str = DEFAULTS["frame_format"],
                   stream=None) -> dict:
    """Prepare every clip of `<manifest_dir>/manifest.csv` (all splits) into `<out_dir>`; resumable.

    Shards already complete in `out_dir` (same manifest and settings) are kept; a changed manifest
    or setting is refused rather than mixed in. Returns the report (also `prepared/report.json`).
    """
    manifest_dir, out_dir = Path(manifest_dir), Path(out_dir)
    if frame_format not in FRAME_FORMATS:
        raise ValueError(f"frame format {frame_format!r}: choose from {FRAME_FORMATS}")
    if manifest_dir.resolve() == out_dir.resolve():
        raise ValueError(f"{out_dir}: choose an output folder other than the source manifest's")
    rows = read_manifest(manifest_dir / "manifest.csv")
    if not rows:
        raise ValueError(f"{manifest_dir / 'manifest.csv'}: no rows")
    settings = {"short_side": int(short_side), "frame_stride": int(frame_stride),
                "jpeg_quality": int(jpeg_quality), "audio_rate": SAMPLE_RATE, "window_grid": audio_lib.HOP,
                "frame_format": frame_format}
    folder = out_dir / "prepared"
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / ".lock", "w")  # one run per folder: a second would delete the first's temp files
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ValueError(f"{out_dir}: another `avfusion data cache` is writing this folder") from None
    try:
        return _cache(manifest_dir, out_dir, rows, settings, folder, clips_per_shard, workers, stream,
                      lock.fileno())
    finally:
        lock.close()


def _close_fd(fd: int) -> None:
    os.close(fd)  # a worker must not keep the folder's lock after its parent is killed


def _cache(manifest_dir: Path, out_dir: Path, rows: list[dict], settings: dict, folder: Path,
           clips_per_shard: int, workers: int, stream, lock_fd: int) -> dict:
    chunks = [rows[i:i + clips_per_shard] for i in range(0, len(rows), clips_per_shard)]
    plan = {"format": FORMAT_VERSION, "source": str(manifest_dir.resolve()), "settings": settings,
            "plan_id": _plan_id(rows, settings), "clips": len(rows), "shards": len(chunks),
            "clips_per_shard": clips_per_shard}
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        old = read_json(meta_path)
        if old.get("plan_id") != plan["plan_id"] or old.get("shards") != plan["shards"] or old.get("format") != FORMAT_VERSION:
            raise ValueError(f"{out_dir}: prepared from another manifest, with other settings or by another format "
                             f"({old.get('settings')}, {old.get('clips')} clips, format {old.get('format')}); "
                             f"use a new --out")
    else:
        atomic_write_json(meta_path, plan)
    for stale in folder.glob(".shard-*.tmp"):  # half-written by a killed run
        stale.unlink()
    done = [i for i in range(len(chunks)) if _complete(folder, i)]
    todo = [i for i in range(len(chunks)) if i not in set(done)]
    out = stream
    print(f"{timestamp()} cache {manifest_dir} -> {out_dir}: {len(rows)} clips in {len(chunks)} shards; "
          f"{len(done)} complete already, {len(todo)} to do, {workers} workers", file=out, flush=True)
    progress = Progress(total=len(rows), desc="cache clips", every=1, stream=out,
                        start=sum(len(chunks[i]) for i in done))
    unreadable = 0
    jobs = [(i, chunks[i], str(folder), settings) for i in todo]
    t0 = time.perf_counter()
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(workers, _close_fd, (lock_fd,)) as pool:
            for result in pool.imap_unordered(prepare_shard, jobs):
                unreadable += result["failed"]
                progress.update(result["clips"], shard=result["shard"], unreadable=unreadable)
    else:
        for job in jobs:
            result = prepare_shard(job)
            unreadable += result["failed"]
            progress.update(result["clips"], shard=result["shard"], unreadable=unreadable)
    report = _finish(manifest_dir, out_dir, rows, len(chunks), plan)
    report["resumed_shards"], report["prepared_shards"] = len(done), len(todo)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(folder / "report.json", report)
    return report


def _finish(manifest_dir: Path, out_dir: Path, rows: list[dict], n_shards: int, plan: dict) -> dict:
    """The manifest folder around the shards: readable clips only, unreadable ones in the report."""
    folder = out_dir / "prepared"
    entries, failed = {}, {}
    for i in range(n_shards):
        shard = read_json(folder / f"{shard_name(i)}.json")
        entries.update(shard["clips"])
        failed.update(shard["failed"])
    kept = []
    for row in rows:
        if row["clip_id"] in entries:
            row = dict(row)
            if entries[row["clip_id"]].get("end"):
                row["end"] = entries[row["clip_id"]]["end"]
            kept.append(row)
    with open(manifest_dir / "manifest.csv", newline="") as fh:
        columns = csv.DictReader(fh).fieldnames
    atomic_write_csv(out_dir / "manifest.csv", ({c: r.get(c, "") for c in columns} for r in kept), columns)
    for name in ("classes.txt", "report.json"):
        if (manifest_dir / name).is_file():
            shutil.copyfile(manifest_dir / name, out_dir / name)
    dropped_pairs = []
    if (manifest_dir / "pairs.csv").is_file():
        with open(manifest_dir / "pairs.csv", newline="") as fh:
            reader = csv.DictReader(fh)
            pairs, pair_columns = list(reader), reader.fieldnames
        ok = [p for p in pairs if p["clip_id_1"] not in failed and p["clip_id_2"] not in failed]
        dropped_pairs = [p["pair_id"] for p in pairs if p not in ok]
        atomic_write_csv(out_dir / "pairs.csv", ok, pair_columns)
    return {"source": plan["source"], "settings": plan["settings"], "clips": len(rows),
            "prepared": len(kept), "unreadable": len(failed),
            "unreadable_clips": [{"clip_id": k, **v} for k, v in sorted(failed.items())],
            "pairs_dropped": dropped_pairs, "shards": n_shards}


# -- reading --------------------------------------------------------------------------------------
def _decode_jpeg_rgbx(data: bytes, height: int, width: int) -> np.ndarray | None:
    """A kept JPEG frame decoded by Pillow's JPEG decoder (libjpeg) straight into an `(H, W, 4)` uint8
    array (Pillow's own RGB layout, X = 255): the pixels of `np.array(Image.open(...))` (asserted in
    tests/test_prepared.py) without its Python header parse and its copy out (~0.25 ms of ~0.85 per
    256 x 455 frame). None when anything differs from what this expects (then Image.open decodes it)."""
    try:
        image = np.empty((height, width, 4), dtype=np.uint8)
        core = Image.core.map_buffer(image, (width, height), "raw", 0, ("RGBX", 0, 1))
        decoder = Image._getdecoder("RGB", "jpeg", ("RGB", ""))
        decoder.setimage(core, (0, 0, width, height))
        try:
            done, error = decoder.decode(data)
            if done >= 0 and error == 0:  # asks for more data: tell it there is none (as ImageFile.load)
                done, error = decoder.decode(b"")
        finally:
            decoder.cleanup()
    except Exception:  # an internal Pillow call of another version
        return None
    return image if done < 0 and error >= 0 else None


def hop_grid_windows(n: int, grid: int = audio_lib.HOP) -> int:
    """How many 3 s windows on the hop grid lie inside n samples of audio (starts 0, grid, 2 grid, ...)."""
    return max(0, (n - audio_lib.CLIP_SAMPLES) // grid + 1)


def hop_grid_start(j0: int, n: int, grid: int = audio_lib.HOP) -> int | None:
    """The prepared form's window rule, on sample indices of a clip's 16 kHz audio (n samples): a 3 s window
    starting at sample j0 that lies inside the audio moves to the hop-grid start 250 q nearest it (q the
    nearest integer to j0 / 250, kept inside the audio: at most 125 samples = 7.8 ms away); None for a window
    the raw path pads (then it is left as it is). The one copy of the rule: `PreparedMedia.snap` and
    `PreparedMedia.log_mel` use it, and so may a raw-path Dataset that is to give the prepared form's windows."""
    if not 0 <= j0 <= n - audio_lib.CLIP_SAMPLES:
        return None
    return grid * min(max(int(round(j0 / grid)), 0), hop_grid_windows(n, grid) - 1)


_MOST_CLIPPED_FRAMES = 96  # more frames reached by the clamp: the whole window's STFT costs less
_EDGE = 650  # samples of each window end that its reflect-padded STFT frames 0, 1 and 191 read


def _frame_samples(frames: np.ndarray) -> np.ndarray:
    """`(m, 800)` positions in a 48 000-sample window of the samples its STFT frames `frames` read, with
    torch.stft's centring and reflect padding (frame k centred on sample 250 k; the padding mirrors about
    the first / last sample without repeating it)."""
    half, size = audio_lib.N_FFT // 2, audio_lib.CLIP_SAMPLES
    k = np.asarray(frames)[:, None] * audio_lib.HOP + np.arange(-half, half)
    return np.where(k < 0, -k, np.where(k >= size, 2 * (size - 1) - k, k))


@functools.lru_cache(maxsize=1)
def _edge_index() -> np.ndarray:
    """(3, 800) indices into [first _EDGE samples, last _EDGE samples] of a window: its STFT frames 0, 1
    and 191, the ones that read the reflect padding."""
    size = audio_lib.CLIP_SAMPLES
    k = _frame_samples(np.array([0, 1, audio_lib.N_FRAMES - 1]))
    assert ((k < _EDGE) | (k >= size - _EDGE)).all()
    return np.where(k < _EDGE, k, k - (size - _EDGE) + _EDGE)


class PreparedMedia:
    """Reads the shards of `<manifest_dir>/prepared`: audio windows and frames by clip_id.

    File handles are opened lazily per process (DataLoader workers each get their own).
    """

    def __init__(self, manifest_dir):
        self.folder = Path(manifest_dir) / "prepared"
        meta = read_json(self.folder / "meta.json")
        self.settings = meta["settings"]
        self.short_side = self.settings["short_side"]
        self.clips: dict[str, tuple[int, dict]] = {}
        for i in range(meta["shards"]):
            if not _complete(self.folder, i):
                raise FileNotFoundError(f"{self.folder}: {shard_name(i)} is missing or incomplete; "
                                        f"rerun `avfusion data cache` to finish it")
            shard = read_json(self.folder / f"{shard_name(i)}.json")
            for clip_id, entry in shard["clips"].items():
                self.clips[clip_id] = (i, entry)
        self._fds: dict[int, int] = {}
        self._pid = None

    @staticmethod
    def exists(manifest_dir) -> bool:
        return (Path(manifest_dir) / "prepared" / "meta.json").is_file()

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked into a worker: its own descriptors
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.folder / f"{shard_name(shard)}.tar", os.O_RDONLY)
        return fd

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        return os.pread(self._fd(shard), size, offset)

    def entry(self, clip_id: str) -> tuple[int, dict]:
        if clip_id not in self.clips:
            raise MediaError(f"{self.folder}: clip {clip_id} is not in the prepared shards")
        return self.clips[clip_id]

    def audio(self, clip_id: str, t0: float, t1: float) -> torch.Tensor:
        """(n,) float32 16 kHz: the samples `read_audio(file, t0, t1)` gives (same grid, same clip)."""
        shard, entry = self.entry(clip_id)
        rate = self.settings["audio_rate"]
        start, n = entry["audio_start"], entry["audio_samples"]
        j0 = min(n, max(0, int(round((t0 - start) * rate))))
        j1 = min(n, int(round((min(t1, entry["audio_end"]) - start) * rate)))
        if j1 <= j0:
            raise MediaError(f"clip {clip_id}: no audio in [{t0:.3f}, {t1:.3f}] s "
                             f"(audio covers [{start:.3f}, {entry['audio_end']:.3f}] s)")
        offset, _ = entry["members"]["audio.f32"]
        data = self._read(shard, offset + 4 * j0, 4 * (j1 - j0))
        return torch.from_numpy(np.frombuffer(data, dtype="<f4").copy())

    def snap(self, clip_id: str, t0: float) -> float:
        """The prepared form's window rule: a 3 s window that lies inside the clip's audio starts on the
        hop grid (sample 250 q of the clip's 16 kHz audio, q the nearest integer to the raw start's sample
        / 250, kept inside the audio), so that its log-mel is a slice of the clip's mel power; any other
        window (one the raw path pads, a clip without `mel.f32`, a folder of format 1) is left as it is."""
        grid = self.settings.get("window_grid")
        shard, entry = self.entry(clip_id)
        if not grid or "mel_frames" not in entry:
            return t0
        rate, start = self.settings["audio_rate"], entry["audio_start"]
        j = hop_grid_start(int(round((t0 - start) * rate)), entry["audio_samples"], grid)
        return t0 if j is None else start + j / rate

    def log_mel(self, clip_id: str, t0: float, t1: float, gain_db: float | None = None) -> torch.Tensor | None:
        """`log_mel(random_gain(wave))` of the window [t0, t1) from the clip's stored mel power, or None when
        the window is not a whole 3 s on the hop grid inside the audio (`snap`; then the caller computes it
        from the wave, as the raw path does).

        Rule (asserted in tests/test_prepared.py): the window's STFT frames 2..190 are centred on samples
        250 (q + 2) .. 250 (q + 190) and read only samples inside the window, so they are the clip's frames
        q + 2 .. q + 190 (the same 800 samples, window and FFT: bit for bit); frames 0, 1 and 191 read the
        window's reflect padding and are computed from the window's first and last 650 samples (the same
        padding, `_edge_index`). Without a gain the result equals `log_mel(wave)` exactly. With the train gain g
        (`random_gain`: clamp(g x, -1, 1)), frames with no sample the clamp can reach are g^2 P (as the decoded
        memo does: P(g x) = g^2 P(x) up to float rounding) and the frames that read a 250-sample block with
        peak |x| g > 1 are computed from the clamped wave, as the raw path computes every frame."""
        grid = self.settings.get("window_grid")
        shard, entry = self.entry(clip_id)
        if not grid or "mel_frames" not in entry:
            return None
        rate, n, start = self.settings["audio_rate"], entry["audio_samples"], entry["audio_start"]
        size, hop = audio_lib.CLIP_SAMPLES, audio_lib.HOP
        j0 = int(round((t0 - start) * rate))
        j1 = int(round((min(t1, entry["audio_end"]) - start) * rate))
        if j1 != j0 + size or hop_grid_start(j0, n, grid) != j0:  # not a window of the rule
            return None
        q = j0 // hop
        members = entry["members"]
        audio = members["audio.f32"][0]
        scale, clipped = 1.0, None
        if gain_db is not None:
            scale = 10.0 ** (gain_db / 20.0)
            peaks = np.frombuffer(self._read(shard, members["peak.f32"][0] + 4 * q, 4 * (size // hop)), dtype="<f4")
            reached = np.zeros(audio_lib.N_FRAMES + 3, dtype=bool)  # [2 + b]: 250-sample block b the clamp may touch
            reached[2:-1] = peaks.astype(np.float64) * scale > 1.0 - 1e-6  # the margin covers float32(g) > g
            if reached.any():  # frame k reads blocks k - 2 .. k + 1 (its reflect padding stays in them)
                clipped = reached[:-3] | reached[1:-2] | reached[2:-1] | reached[3:]  # (192,) frames to recompute
                if clipped.sum() > _MOST_CLIPPED_FRAMES:  # most frames: the window's whole STFT, as the raw path
                    wave = torch.frombuffer(bytearray(self._read(shard, audio + 4 * j0, 4 * size)), dtype=torch.float32)
                    return audio_lib.log_mel(audio_lib.apply_gain(wave, gain_db))
        power = torch.empty(audio_lib.N_FRAMES, audio_lib.N_MELS, dtype=torch.float32)  # (192, 128): frame 192 is dropped
        rows = power.numpy()
        fd, row_bytes = self._fd(shard), 4 * audio_lib.N_MELS
        inner = members["mel.f32"][0] + row_bytes * (q + 2)  # frames 2..190: the clip's frames q + 2 .. q + 190
        if os.preadv(fd, [rows[2:audio_lib.N_FRAMES - 1]], inner) != row_bytes * (audio_lib.N_FRAMES - 3):
            raise MediaError(f"{self.folder / shard_name(shard)}.tar: clip {clip_id}'s mel power is cut short")
        if "edge.f32" in members:  # frames 0, 1 and 191 as stored for this window (`clip_edge_power`)
            edge = members["edge.f32"][0] + 3 * row_bytes * q
            if os.preadv(fd, [rows[:2], rows[audio_lib.N_FRAMES - 1:]], edge) != 3 * row_bytes:
                raise MediaError(f"{self.folder / shard_name(shard)}.tar: clip {clip_id}'s edge power is cut short")
        else:  # format 2: from the window's first and last _EDGE samples
            ends = np.empty(2 * _EDGE, dtype=np.float32)
            ends[:_EDGE] = np.frombuffer(self._read(shard, audio + 4 * j0, 4 * _EDGE), dtype="<f4")
            ends[_EDGE:] = np.frombuffer(self._read(shard, audio + 4 * (j1 - _EDGE), 4 * _EDGE), dtype="<f4")
            edge_power = audio_lib.frames_mel_power(torch.from_numpy(ends[_edge_index()])).T  # (3, 128)
            power[:2], power[audio_lib.N_FRAMES - 1] = edge_power[:2], edge_power[2]
        if gain_db is not None:
            power.mul_(scale * scale)
        if clipped is not None:  # frames from the clamped wave, as the raw path computes them all
            wave = torch.frombuffer(bytearray(self._read(shard, audio + 4 * j0, 4 * size)), dtype=torch.float32)
            gained = audio_lib.apply_gain(wave, gain_db)
            inner = np.flatnonzero(clipped[2:-1])  # frames 2 + i, inside the window
            if inner.size:  # frame k reads [250 k - 400, 250 k + 400): unfold from sample 100 gives k - 2
                frames = gained[hop * 2 - audio_lib.N_FFT // 2:].unfold(0, audio_lib.N_FFT, hop)
                if inner[-1] - inner[0] + 1 == inner.size:  # one run: a slice, no gather
                    run = slice(int(inner[0]), int(inner[-1]) + 1)
                    power[2 + run.start:2 + run.stop] = audio_lib.frames_mel_power(frames[run]).T
                else:
                    index = torch.from_numpy(inner)
                    power[index + 2] = audio_lib.frames_mel_power(frames[index]).T
            edges = [row for row, k in enumerate((0, 1, audio_lib.N_FRAMES - 1)) if clipped[k]]
            if edges:  # frame 0, 1 or 191: the reflect-padded ones
                ends = torch.cat([gained[:_EDGE], gained[size - _EDGE:]])
                edge_power = audio_lib.frames_mel_power(ends[torch.from_numpy(_edge_index())])  # (128, 3)
                for row in edges:
                    power[(0, 1, audio_lib.N_FRAMES - 1)[row]] = edge_power[:, row]
        return power.add_(audio_lib.LOG_EPS).log10_().T.contiguous().unsqueeze(0)  # (1, 128, 192)

    def _image(self, shard: int, entry: dict, member: str) -> np.ndarray:
        offset, size = entry["members"][member]
        if member.endswith(".rgb"):  # a raw frame: read straight into the array
            image = np.empty(entry["frame_shapes"][int(member[1:5])], dtype=np.uint8)
            if os.preadv(self._fd(shard), [image], offset) != size:
                raise MediaError(f"{self.folder / shard_name(shard)}.tar: {member} is cut short")
            return image
        formats = ("JPEG",) if member.endswith(".jpg") else None  # kept frames: skip the format detection
        with Image.open(io.BytesIO(self._read(shard, offset, size)), formats=formats) as img:
            return np.array(img if img.mode == "RGB" else img.convert("RGB"))  # (H, W, 3) uint8, writable

    def frame(self, clip_id: str, t: float | None = None, rgbx: bool = False) -> np.ndarray:
        """The last kept frame at or before t (the first kept frame if none; a still: itself).

        `rgbx`: a JPEG frame may come as the RGB view of an (H, W, 4) array it was decoded straight into
        (same pixels; ~0.25 ms less): for the train transform, which resizes the 4 channels at no extra
        cost (`transforms._rgbx`); a transform that only crops (eval at the prepared short side) would pay
        more for the strided view than the copy costs."""
        shard, entry = self.entry(clip_id)
        times = entry["frame_times"]
        if not times:  # a still
            return self.annotated_frame(clip_id)
        k = 0
        if t is not None:
            before = [i for i, ts in enumerate(times) if ts <= t]
            k = max(before, key=lambda i: times[i]) if before else min(range(len(times)), key=times.__getitem__)
        if f"f{k:04d}.rgb" in entry["members"]:
            return self._image(shard, entry, f"f{k:04d}.rgb")
        if rgbx and "frame_shapes" in entry:  # the JPEG decoded straight into an RGBX array (no header parse, no copy)
            offset, size = entry["members"][f"f{k:04d}.jpg"]
            height, width, _ = entry["frame_shapes"][k]
            image = _decode_jpeg_rgbx(self._read(shard, offset, size), height, width)
            if image is not None:
                return image[..., :3]  # (H, W, 3) view of the (H, W, 4) array: transforms resize the 4 channels
        return self._image(shard, entry, f"f{k:04d}.jpg")

    def frame_time(self, clip_id: str, t: float | None = None) -> float:
        """Timestamp of the frame `frame(clip_id, t)` returns."""
        times = self.entry(clip_id)[1]["frame_times"]
        before = [ts for ts in times if t is not None and ts <= t]
        return max(before) if before else min(times)

    def annotated_frame(self, clip_id: str) -> np.ndarray:
        """The still `frame`, or the video frame nearest the row's `frame_time` (full size, as raw)."""
        shard, entry = self.entry(clip_id)
        member = [m for m in entry["members"] if m.startswith("annot.")]
        if not member:
            raise MediaError(f"clip {clip_id}: no still or annotated frame in the prepared shards")
        return self._image(shard, entry, member[0])

    def __getstate__(self):  # descriptors are per process
        state = dict(self.__dict__)
        state["_fds"], state["_pid"] = {}, None
        return state
