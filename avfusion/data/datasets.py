"""torch Datasets over manifests (docs/interfaces.md, "Data"); every item is a dict of tensors.

    ds = AVClipDataset("data/tuxav-tiny", "train", train=True, image_size=112)
    item = ds[0]   # image (3,112,112), audio (1,128,192), label, index

Timing (spec 1.3, 4.5): a 3 s audio window and one frame per item.
- window centre: `frame_time` when the row has one, else the middle of [start, end];
- train: rows with `frame_time` jitter the centre by U(+-0.33 * 3 s) (AVSBench), others draw the
  centre from U(start + 1.5, end - 1.5) (VideoDataset); the window is then clamped into [start, end];
- frame: the still `frame`, or the video frame at a random time in the window (train) or the frame
  nearest the window centre (eval: deterministic, unlike the official code, spec 8 item 42);
  segmentation / localization always take the annotated frame at `frame_time` (its mask / boxes).
Train randomness uses torch's global RNG, which DataLoader seeds per worker; eval uses none.
A clip that cannot be read, or whose audio window holds NaN/inf, raises MediaError naming the file
and the clip (never a random substitute).

Media (README "Data loading speed"): `media=None` reads a folder made by `avfusion data cache` from
its shards (`data/prepared.py`: frame rule "the kept frame at or before t", same audio samples, the
window's start on the 250-sample hop grid so its log-mel is sliced from the clip's stored mel power) and
any other folder raw; `media="raw"` forces the raw files. Raw options: `frame_rule` "nearest"
(default, as above) or "keyframe" (the official rule: the keyframe at or before t), and
`decode_short_side` (the decoder scales sampled video frames to that short side; default None =
full size). Stills and annotated frames are always read full size (their masks and boxes).

Decoded-clip memo (`data.cache_decoded: true`, the tiny scale; `DECODED.enable()`): every decoded
audio window, frame and unaugmented mel power is kept in the job's process, so no epoch (and no kNN
or evaluation pass) decodes or transforms a clip twice: measured 0.19 -> ~0.03 CPU-s of data per
32-clip batch on tuxav tiny (README "Scales"). Same values as without it: the train gain is applied to
the cached mel power (mel power is linear in the power spectrum: P(g x) = g^2 P(x)), the same RNG
draws are made, and a window the gain would clip (|g x| > 1, official clamp) is computed from the
wave as without the memo. Memory: ~0.3 MB per clip (1 920 tuxav tiny clips: ~0.6 GB at most).
`avfusion data make-tuxav --decoded` (the DAG's tuxav rule) also writes `<manifest>/decoded.pt`
(`write_decoded`: every clip's eval window, mel power and still / annotated frame, ~0.65 GB at tiny,
15 CPU-s once); an enabled memo fills itself from it (memory-mapped: jobs side by side share the
pages), so a job decodes no clip at all: linear probe 21.4 -> 14.7 CPU-s (same 30.21 %), AV-MAE
pretraining 92.9 -> 85.7 (benchmarks/results/tiny_history.md). The file packs the decodes in one flat
buffer per dtype with an index (format 2), so filling the memo costs 0.44 CPU-s per job, not 1.95 (one
record per tensor, format 1, still read; measured 2026-12-02 on the 5 880 decodes of tuxav tiny).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .. import audio as audio_lib
from .. import transforms
from ..media import FRAME_RULES, MediaError, duration, read_audio, read_frame
from .manifest import PAIR_COLUMNS, read_classes, read_manifest, split_labels
from .prepared import PreparedMedia

MEDIA_FORMS = ("raw", "prepared")

SEGMENTATION_JITTER_S = 0.33 * audio_lib.CLIP_SECONDS  # AVSBench train jitter (spec 4.5)
MIN_AUDIO_S = 0.25  # a window with less audio than this is refused rather than padded 12x


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


DECODED_FILE = "decoded.pt"   # <manifest>/decoded.pt: write_decoded(); read by an enabled memo


class DecodedMemo:
    """Process-wide memo of decoded media (off unless enabled; see the module docstring)."""

    def __init__(self):
        self.enabled = False
        self.items: dict = {}
        self.attached: set = set()

    def enable(self, on: bool = True) -> None:
        self.enabled = bool(on)
        if not on:
            self.items.clear()
            self.attached.clear()

    def attach(self, manifest_dir: Path) -> None:
        """Fill the memo from `<manifest_dir>/decoded.pt` (once per folder; memory-mapped, so jobs side
        by side share its pages) when the memo is on and the file belongs to this manifest.csv."""
        if not self.enabled or str(manifest_dir) in self.attached:
            return
        self.attached.add(str(manifest_dir))
        path = Path(manifest_dir) / DECODED_FILE
        if not path.is_file():
            return
        try:
            data = torch.load(path, mmap=True, weights_only=True)
        except (RuntimeError, OSError, ValueError) as err:
            print(f"{path}: not read ({str(err).splitlines()[0]}); clips are decoded as without it")
            return
        if data.get("manifest_sha1") != _manifest_sha1(manifest_dir):
            return   # written for another manifest.csv: decode as without it
        for kind, rest, value in _decoded_values(data):
            if kind == "frame":
                value = value.numpy()
            elif kind == "mel_power":
                value = (value[0], float(value[1]))
            key = (kind, str(manifest_dir), *rest)
            self.items.setdefault(key, value)

    def get(self, key, make):
        if not self.enabled:
            return make()
        if key not in self.items:
            self.items[key] = make()
        return self.items[key]


DECODED = DecodedMemo()


def _manifest_sha1(manifest_dir) -> str:
    import hashlib

    return hashlib.sha1((Path(manifest_dir) / "manifest.csv").read_bytes()).hexdigest()


def write_decoded(manifest_dir) -> Path:
    """`<manifest_dir>/decoded.pt`: every clip's deterministic decodes (the audio window of an eval
    item, its mel power and peak, the still or annotated frame), as the memo keeps them, so
    that no job of the DAG decodes the benchmark again (tuxav: every window is the whole 3 s clip, so
    train and eval items share them). Written atomically; `DecodedMemo.attach` checks it against
    manifest.csv's hash."""
    import os

    manifest_dir = Path(manifest_dir)
    was_on, saved = DECODED.enabled, dict(DECODED.items)
    DECODED.enable(False)
    DECODED.enable(True)
    try:
        rows = read_manifest(manifest_dir / "manifest.csv")
        for split in sorted({r["split"] for r in rows}):
            ds = _ManifestClips(manifest_dir, split, train=False, image_size=16)
            for row in ds.rows:
                t0, t1, centre = ds.window(row)
                ds.waveform(row, t0, t1)
                ds._memo_log_mel(row, t0, t1, gain=False)
                ds.frame(row, t0, t1, centre)
                if row.get("frame_time") not in (None, ""):
                    ds.frame(row, t0, t1, centre, annotated=True)
        out = manifest_dir / DECODED_FILE
        tmp = out.with_suffix(".pt.tmp")
        torch.save({"manifest_sha1": _manifest_sha1(manifest_dir), **_packed_decodes(DECODED.items)}, tmp)
        os.replace(tmp, out)
        return out
    finally:
        DECODED.enable(False)
        DECODED.items.update(saved)
        DECODED.enabled = was_on


def _packed_decodes(items: dict) -> dict:
    """The memo's decodes as one flat buffer per dtype and a list of (kind, key, dtype, offset, shape, peak):
    loading then costs a few records, not one per tensor (5 880 tensors at tiny: 1.95 -> 0.44 CPU-s per job)."""
    buffers: dict[str, list] = {}
    sizes: dict[str, int] = {}
    index = []
    for key, value in items.items():
        peak = None
        if key[0] == "frame":
            value = torch.from_numpy(np.array(value))   # a writable copy
        elif key[0] == "mel_power":
            value, peak = value[0], float(value[1])
        dtype = str(value.dtype).removeprefix("torch.")
        offset = sizes.get(dtype, 0)
        buffers.setdefault(dtype, []).append(value.reshape(-1))   # (numel,)
        sizes[dtype] = offset + value.numel()
        index.append((key[0], key[2:], dtype, offset, tuple(value.shape), peak))
    return {"format": 2, "index": index, "buffers": {dtype: torch.cat(parts) for dtype, parts in buffers.items()}}


def _decoded_values(data: dict):
    """(kind, key, value) of a loaded decoded.pt, value as the memo keeps it before conversion: a frame
    tensor (H, W, 3), a wave (T,), a mel power (tensor, peak). Views into the memory-mapped buffers.
    Format 1 (one record per tensor, before 2026-12-02) is read as well."""
    if "items" in data:
        yield from data["items"]
        return
    for kind, rest, dtype, offset, shape, peak in data["index"]:
        numel = int(np.prod(shape)) if shape else 1
        value = data["buffers"][dtype][offset:offset + numel].view(shape)
        yield kind, tuple(rest), ((value, peak) if kind == "mel_power" else value)


class _ManifestClips(Dataset):
    """Rows of one split of `<manifest_dir>/manifest.csv`, and how to read a clip's audio and frame."""
    UINT8_TRAIN_IMAGES = True  # training items may carry uint8 images (train_image_dtype)

    def __init__(self, manifest_dir, split: str, train: bool, image_size: int, required=(),
                 media: str | None = None, frame_rule: str = "nearest", decode_short_side: int | None = None,
                 train_image_dtype: str = "float32"):
        self.manifest_dir = Path(manifest_dir)
        if train_image_dtype not in ("float32", "uint8"):
            raise ValueError(f"train_image_dtype {train_image_dtype!r}: choose from ('float32', 'uint8')")
        # uint8: training items carry the uint8 crop; the engine normalises each batch on the device
        # (transforms.normalize_batch_images). Evaluation items (train=False) are always normalised float32.
        self.uint8_image = train and train_image_dtype == "uint8"
        if self.uint8_image and not self.UINT8_TRAIN_IMAGES:
            raise ValueError(f"{type(self).__name__}: train_image_dtype 'uint8' (config key data.train_image_dtype) "
                             "is not available here: its frame and map share one float crop; use 'float32'")
        self.split, self.train, self.image_size = split, train, int(image_size)
        if media is None:  # a folder written by `avfusion data cache` reads its shards
            media = "prepared" if PreparedMedia.exists(self.manifest_dir) else "raw"
        if media not in MEDIA_FORMS:
            raise ValueError(f"media {media!r}: choose from {MEDIA_FORMS}")
        if frame_rule not in FRAME_RULES:
            raise ValueError(f"frame rule {frame_rule!r}: choose from {FRAME_RULES}")
        self.media, self.frame_rule, self.decode_short_side = media, frame_rule, decode_short_side
        if media == "prepared" and not PreparedMedia.exists(self.manifest_dir):
            raise FileNotFoundError(f"{self.manifest_dir}: media 'prepared' but no prepared/meta.json here; run "
                                    f"`avfusion data cache --manifest <raw folder> --out {self.manifest_dir}` first")
        self.prepared = PreparedMedia(self.manifest_dir) if media == "prepared" else None
        self.rows = read_manifest(self.manifest_dir / "manifest.csv", split)
        if not self.rows:
            raise ValueError(f"{self.manifest_dir / 'manifest.csv'}: no rows with split '{split}'")
        self.classes = read_classes(self.manifest_dir)
        self.class_index = {name: i for i, name in enumerate(self.classes)}
        DECODED.attach(self.manifest_dir)
        for col in required:
            missing = [r["clip_id"] for r in self.rows if not r.get(col)]
            if missing:
                raise ValueError(f"{self.manifest_dir / 'manifest.csv'}: {len(missing)} '{split}' rows have no "
                                 f"'{col}' (first: {missing[0]})")
        for row in self.rows:
            if not (row.get("audio") or row.get("video")):
                raise ValueError(f"manifest clip {row['clip_id']}: neither 'audio' nor 'video' is set")
            if not (row.get("frame") or row.get("video")):
                raise ValueError(f"manifest clip {row['clip_id']}: neither 'frame' nor 'video' is set")
            for name in split_labels(row.get("label", "")):
                if name not in self.class_index:
                    raise ValueError(f"manifest clip {row['clip_id']}: label '{name}' is not in "
                                     f"{self.manifest_dir / 'classes.txt'}")

    def __len__(self) -> int:
        return len(self.rows)

    # -- timing -----------------------------------------------------------------------------
    def span(self, row: dict) -> tuple[float, float]:
        """[start, end] of the usable audio; an empty `end` is probed once and remembered."""
        start = float(row["start"]) if row.get("start") not in (None, "") else 0.0
        if row.get("end") in (None, ""):
            row["end"] = str(start + duration(row.get("audio") or row["video"]))
        return start, float(row["end"])

    def window(self, row: dict) -> tuple[float, float, float]:
        """(t0, t1, centre) of the 3 s audio window, in the file's seconds."""
        start, end = self.span(row)
        half = audio_lib.CLIP_SECONDS / 2
        frame_time = row.get("frame_time")
        if frame_time not in (None, ""):
            centre = float(frame_time)
            if self.train:
                centre += _uniform(-SEGMENTATION_JITTER_S, SEGMENTATION_JITTER_S)
        elif self.train and end - start > 2 * half:
            centre = _uniform(start + half, end - half)
        else:
            centre = (start + end) / 2
        t0 = min(max(centre - half, start), max(end - 2 * half, start))  # clamp the window into the span
        if self.prepared is not None:  # the prepared form's rule: the start on the hop grid (PreparedMedia.snap)
            t0 = self.prepared.snap(row["clip_id"], t0)
        return t0, t0 + 2 * half, centre

    # -- reading ----------------------------------------------------------------------------
    def waveform(self, row: dict, t0: float, t1: float) -> torch.Tensor:
        """(48000,) float32: the window, padded by the official time-reversal rule.

        Less than MIN_AUDIO_S of audio in the window is an error: padding it would invent the clip."""
        path = row.get("audio") or row["video"]
        return DECODED.get(("wave", str(self.manifest_dir), row["clip_id"], t0, t1),
                           lambda: self._read_waveform(row, path, t0, t1))

    def _read_waveform(self, row: dict, path: str, t0: float, t1: float) -> torch.Tensor:
        wave = self.prepared.audio(row["clip_id"], t0, t1) if self.prepared else read_audio(path, t0, t1)
        if wave.numel() < MIN_AUDIO_S * audio_lib.SAMPLE_RATE:
            raise MediaError(f"{path}: too short: {wave.numel() / audio_lib.SAMPLE_RATE:.3f} s of audio in "
                             f"[{t0:.3f}, {t1:.3f}] s (clip {row['clip_id']}; at least {MIN_AUDIO_S} s needed)")
        if not bool(torch.isfinite(wave.sum())) and not bool(torch.isfinite(wave).all()):  # sum: 10x cheaper
            bad = int((~torch.isfinite(wave)).sum())
            raise MediaError(f"{path}: {bad} non-finite (NaN/inf) audio samples in [{t0:.3f}, {t1:.3f}] s "
                             f"(clip {row['clip_id']})")
        return audio_lib.pad_or_trim(wave)

    def frame(self, row: dict, t0: float, t1: float, centre: float, annotated: bool = False) -> np.ndarray:
        """The still `frame`, or a video frame: the annotated one at `frame_time` when `annotated`
        (masks and boxes belong to it), else at a random time in the window (train) or at the centre,
        chosen by `frame_rule` (raw) or the prepared form's rule (the kept frame at or before t)."""
        annotated = annotated and row.get("frame_time") not in (None, "")
        t = None if row.get("frame") or annotated else (_uniform(t0, t1) if self.train else centre)
        key = ("frame", str(self.manifest_dir), row["clip_id"], t, annotated and not row.get("frame"),
               self.frame_rule, self.decode_short_side)   # a still frame is its own annotated frame
        return DECODED.get(key, lambda: self._read_frame(row, t, annotated))

    def _read_frame(self, row: dict, t: float | None, annotated: bool) -> np.ndarray:
        if self.prepared:
            if row.get("frame") or annotated:
                return self.prepared.annotated_frame(row["clip_id"])
            return self.prepared.frame(row["clip_id"], t, rgbx=self.train)  # train: resized, RGBX costs nothing
        if row.get("frame"):
            return read_frame(row["frame"])
        if annotated:
            return read_frame(row["video"], float(row["frame_time"]))
        return read_frame(row["video"], t, rule=self.frame_rule, short_side=self.decode_short_side)

    def image(self, frame: np.ndarray) -> torch.Tensor:
        if self.train:
            return transforms.train_image(frame, self.image_size, normalized=not self.uint8_image)
        return transforms.eval_image(frame, self.image_size)

    def label_index(self, row: dict) -> int:
        names = split_labels(row.get("label", ""))
        return self.class_index[names[0]] if names else -1

    def label_multihot(self, row: dict) -> torch.Tensor:
        target = torch.zeros(len(self.classes))
        for name in split_labels(row.get("label", "")):
            target[self.class_index[name]] = 1.0
        return target

    def audio_item(self, row: dict, gain: bool) -> tuple[torch.Tensor, float, float, float]:
        t0, t1, centre = self.window(row)
        if DECODED.enabled:
            return self._memo_log_mel(row, t0, t1, gain and self.train), t0, t1, centre
        if self.prepared is not None:  # the window's log-mel sliced from the clip's stored mel power
            gain_db = audio_lib.draw_gain_db() if gain and self.train else None
            spec = self.prepared.log_mel(row["clip_id"], t0, t1, gain_db)
            if spec is None:  # not on the hop grid, padded, or clipped by the gain: from the wave
                wave = self.waveform(row, t0, t1)
                spec = audio_lib.log_mel(wave if gain_db is None else audio_lib.apply_gain(wave, gain_db))
            return spec, t0, t1, centre
        wave = self.waveform(row, t0, t1)
        if gain and self.train:
            wave = audio_lib.random_gain(wave)
        return audio_lib.log_mel(wave), t0, t1, centre  # (1, 128, 192)

    def _memo_log_mel(self, row: dict, t0: float, t1: float, gain: bool) -> torch.Tensor:
        """log_mel(random_gain(wave)) from the memo's mel power and peak (same RNG draw as random_gain)."""
        def power_and_peak():
            wave = self._read_waveform(row, row.get("audio") or row["video"], t0, t1)
            return audio_lib.mel_power(wave.float()), float(wave.abs().max())

        power, peak = DECODED.get(("mel_power", str(self.manifest_dir), row["clip_id"], t0, t1), power_and_peak)
        scale = 1.0
        if gain:
            scale = 10.0 ** (audio_lib.draw_gain_db() / 20.0)
            if peak * scale > 1.0:  # the official clamp changes the wave: compute it as without the memo
                wave = self._read_waveform(row, row.get("audio") or row["video"], t0, t1)
                return audio_lib.log_mel(torch.clamp(wave * scale, -1.0, 1.0))
        return audio_lib.log_mel_from_power(power * (scale * scale))


class AVClipDataset(_ManifestClips):
    """Classification / pretraining: `image (3,S,S)`, `audio (1,128,192)`, `label`, `index`.

    `label` is a long class index (-1 for an unlabelled row) or, with `multilabel`, a multi-hot float.
    """

    def __init__(self, manifest_dir, split: str, train: bool, image_size: int, multilabel: bool = False,
                 **media_options):
        super().__init__(manifest_dir, split, train, image_size, **media_options)
        self.multilabel = multilabel

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        spec, t0, t1, centre = self.audio_item(row, gain=True)
        label = self.label_multihot(row) if self.multilabel else torch.tensor(self.label_index(row))
        return {"image": self.image(self.frame(row, t0, t1, centre)), "audio": spec,
                "label": label, "index": torch.tensor(index)}


def read_pairs(manifest_dir, split: str) -> list[dict]:
    path = Path(manifest_dir) / "pairs.csv"
    if not path.is_file():
        raise FileNotFoundError(f"separation pairs not found: {path} (needed for evaluation)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and set(PAIR_COLUMNS) - set(rows[0]):
        raise ValueError(f"{path}: missing columns {sorted(set(PAIR_COLUMNS) - set(rows[0]))}")
    return [r for r in rows if r["split"] == split]


class MixtureDataset(_ManifestClips):
    """Mix-and-separate with 2 sources (spec 4.3); no gain augmentation.

    train: clip `index` + a random other clip, each with its own random window and frame;
    eval: the fixed pairs of `pairs.csv` for `split`, centred windows.
    Returns `image (2,3,S,S)`, `mix_audio (1,128,192)`, `mix_wave (48000,)`, `source_waves (2,48000)`,
    `source_audio (2,1,128,192)`, `label (2,)`, `silent (2,)` bool, `index`. mix = plain sum.
    `silent` marks a source with sum(x^2) < 1e-5: the separation task skips and counts such pairs
    (the official skip rule, spec 4.3) instead of scoring them.
    """

    def __init__(self, manifest_dir, split: str, train: bool, image_size: int, **media_options):
        super().__init__(manifest_dir, split, train, image_size, **media_options)
        self.by_id = {r["clip_id"]: i for i, r in enumerate(self.rows)}
        self.pairs: list[tuple[int, int]] = []
        self.pair_rows: list[dict] = []  # eval: the pairs.csv rows (pair_id, sep_type, ...) by item index
        if not train:
            self.pair_rows = read_pairs(self.manifest_dir, split)
            for pair in self.pair_rows:
                for key in ("clip_id_1", "clip_id_2"):
                    if pair[key] not in self.by_id:
                        raise ValueError(f"{self.manifest_dir / 'pairs.csv'} pair {pair['pair_id']}: "
                                         f"{key} '{pair[key]}' is not a '{split}' clip of the manifest")
                self.pairs.append((self.by_id[pair["clip_id_1"]], self.by_id[pair["clip_id_2"]]))
            if not self.pairs:
                raise ValueError(f"{self.manifest_dir / 'pairs.csv'}: no pairs for split '{split}'")
        elif len(self.rows) < 2:
            raise ValueError(f"{self.manifest_dir}: mixing needs at least 2 '{split}' clips")

    def __len__(self) -> int:
        return len(self.pairs) if not self.train else len(self.rows)

    def __getitem__(self, index: int) -> dict:
        if self.train:
            other = int(torch.randint(0, len(self.rows) - 1, (1,)))
            pair = (index, other + (other >= index))  # any clip but itself
        else:
            pair = self.pairs[index]
        images, waves, labels, powers = [], [], [], []
        for i in pair:
            row = self.rows[i]
            t0, t1, centre = self.window(row)
            waves.append(self.waveform(row, t0, t1))
            if DECODED.enabled:  # each source's mel power, kept by the memo
                powers.append(DECODED.get(("mel_power", str(self.manifest_dir), row["clip_id"], t0, t1),
                                          lambda w=waves[-1]: (audio_lib.mel_power(w.float()), float(w.abs().max())))[0])
            images.append(self.image(self.frame(row, t0, t1, centre)))
            labels.append(self.label_index(row))
        source_waves = torch.stack(waves)  # (2, 48000)
        mix_wave = source_waves.sum(0)  # (48000,)
        return {"image": torch.stack(images), "mix_audio": audio_lib.log_mel(mix_wave),
                "mix_wave": mix_wave, "source_waves": source_waves,
                "source_audio": (audio_lib.log_mel_from_power(torch.stack(powers)) if powers
                                 else audio_lib.log_mel(source_waves)),  # (2, 1, 128, 192)
                "label": torch.tensor(labels), "silent": torch.tensor([audio_lib.is_silent(w) for w in waves]),
                "index": torch.tensor(index)}



def read_label_map(path: str | Path) -> np.ndarray:
    """A mask PNG as its raw pixel values `(H, W)` (mode L / P / I; RGB masks are refused)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: mask file not found")
    try:
        with Image.open(path) as img:
            if img.mode not in ("1", "L", "P", "I", "I;16"):
                raise MediaError(f"{path}: mask must be a single-channel PNG, got mode {img.mode}")
            return np.asarray(img).astype(np.int64)
    except OSError as err:
        raise MediaError(f"{path}: cannot read mask ({err})") from None


class SegmentationDataset(_ManifestClips):
    """AVSBench-style segmentation: `image`, `audio`, `mask (S,S)`, `index`.

    num_classes <= 2: binary target `mask > 0` as float 0/1 (S4, MS3, tuxav).
    Otherwise a long class map of the raw pixel values (background = 0). When a row's `label` lists
    classes, the official AVSS rule applies (spec 4.5, item 41): pixel p is kept only if p + 1 is the
    label2idx index of one of them, else set to 0. label2idx index = line of classes.txt + `first`,
    `first` = report.json details.label2idx_first_index (written by the AVSBench parser; default 1,
    i.e. pixel p = line p). With a 0-based label2idx the rule erases most foreground, as officially.
    """

    UINT8_TRAIN_IMAGES = False  # train_image_mask crops frame and map together in float

    def __init__(self, manifest_dir, split: str, train: bool, image_size: int, num_classes: int,
                 **media_options):
        super().__init__(manifest_dir, split, train, image_size, required=("mask",), **media_options)
        self.num_classes = int(num_classes)
        self.binary = self.num_classes <= 2
        report = self.manifest_dir / "report.json"
        details = json.loads(report.read_text()).get("details", {}) if report.is_file() else {}
        self.label2idx_first = int(details.get("label2idx_first_index", 1))

    def target(self, row: dict, frame: np.ndarray) -> np.ndarray:
        raw = DECODED.get(("mask", row["mask"]), lambda: read_label_map(row["mask"]))
        if raw.shape != frame.shape[:2]:
            resized = Image.fromarray(raw.astype(np.int32)).resize(frame.shape[1::-1], Image.NEAREST)
            raw = np.asarray(resized).astype(np.int64)
        if self.binary:
            return (raw > 0).astype(np.float32)
        if raw.max() >= self.num_classes:
            raise MediaError(f"{row['mask']}: pixel value {raw.max()} >= num_classes {self.num_classes}")
        listed = split_labels(row.get("label", ""))
        if listed:
            video_idx = {self.class_index[n] + self.label2idx_first for n in listed}  # label2idx indices
            keep = np.array([p + 1 in video_idx for p in range(self.num_classes)])
            raw = np.where(keep[raw], raw, 0)
        return raw

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        spec, t0, t1, centre = self.audio_item(row, gain=True)
        frame = self.frame(row, t0, t1, centre, annotated=True)
        target = self.target(row, frame)
        if self.train:
            image, mask = transforms.train_image_mask(frame, target, self.image_size)
        else:
            image, mask = transforms.eval_image_mask(frame, target, self.image_size)
        return {"image": image, "audio": spec, "mask": mask if self.binary else mask.long(),
                "index": torch.tensor(index)}


BOX_RULES = ("auto", "consensus", "union")


def boxes_to_map(boxes: list, height: int, width: int, rule: str = "auto",
                 scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Ground-truth map `(H, W)` float from the manifest's `boxes` (list over annotators of [x1, y1, x2, y2]).

    consensus: sum of the annotators' maps / 2, clipped to 1 (Flickr-SoundNet, spec 4.4: 1 where two
    agree, 0.5 where one does; a lone box gives 0.5); union: every box 1 (VGG-SS, one annotator);
    auto: consensus with >= 2 annotators, else union. Coordinates are multiplied by `scale` (x, y)
    and floored, as the official int(v * 224 / 256). Values stay float (item 40).
    """
    if rule not in BOX_RULES:
        raise ValueError(f"box rule {rule!r}: choose from {BOX_RULES}")
    if rule == "auto":
        rule = "consensus" if len(boxes) >= 2 else "union"
    maps = []
    for annotator in boxes:
        m = np.zeros((height, width), dtype=np.float32)
        for x1, y1, x2, y2 in annotator:
            x1, x2 = int(x1 * scale[0]), int(x2 * scale[0])
            y1, y2 = int(y1 * scale[1]), int(y2 * scale[1])
            m[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 1.0
        maps.append(m)
    if not maps:
        return np.zeros((height, width), dtype=np.float32)
    if rule == "union":
        return np.max(maps, axis=0)
    return np.clip(np.sum(maps, axis=0) / 2.0, 0.0, 1.0)


class LocalizationDataset(_ManifestClips):
    """Sound source localization: `image`, `audio`, `gt_map (S,S)` float in {0, 0.5, 1}, `index`.

    `box_rule` (see boxes_to_map): given, or report.json details.box_rule of the manifest, or 'auto'.
    Eval builds the map on the resized frame's grid (int(v * scale), as the official parser) and
    centre-crops it like the image; train maps follow the image's random crop with NEAREST.
    """

    UINT8_TRAIN_IMAGES = False  # train_image_mask crops frame and map together in float

    def __init__(self, manifest_dir, split: str, train: bool, image_size: int, box_rule: str | None = None,
                 **media_options):
        super().__init__(manifest_dir, split, train, image_size, required=("boxes",), **media_options)
        report = self.manifest_dir / "report.json"
        details = json.loads(report.read_text()).get("details", {}) if report.is_file() else {}
        self.box_rule = box_rule or details.get("box_rule", "auto")
        if self.box_rule not in BOX_RULES:
            raise ValueError(f"{self.manifest_dir}: box rule {self.box_rule!r}; choose from {BOX_RULES}")
        self.boxes = []
        for row in self.rows:
            try:
                boxes = json.loads(row["boxes"])
                if not all(len(b) == 4 for ann in boxes for b in ann):
                    raise ValueError("each box needs 4 numbers")
            except (ValueError, TypeError) as err:
                raise ValueError(f"manifest clip {row['clip_id']}: bad 'boxes' {row['boxes']!r} "
                                 f"(expected [[[x1, y1, x2, y2], ...], ...] per annotator): {err}") from None
            self.boxes.append(boxes)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        spec, t0, t1, centre = self.audio_item(row, gain=True)
        frame = self.frame(row, t0, t1, centre, annotated=True)
        height, width = frame.shape[:2]
        if self.train:
            gt = boxes_to_map(self.boxes[index], height, width, self.box_rule)
            image, gt_map = transforms.train_image_mask(frame, gt, self.image_size)
        else:
            image = transforms.eval_image(frame, self.image_size, short=self.image_size)  # as eval_image_mask
            h, w = transforms.short_side_size(height, width, self.image_size)  # the Resize(S) grid
            gt = boxes_to_map(self.boxes[index], h, w, self.box_rule, scale=(w / width, h / height))
            top, left = transforms.center_crop_box(h, w, self.image_size)
            gt_map = torch.from_numpy(gt[top:top + self.image_size, left:left + self.image_size].copy())
        return {"image": image, "audio": spec, "gt_map": gt_map.float(), "index": torch.tensor(index)}
