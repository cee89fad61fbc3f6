"""tuxav: the embedded mini audio-visual benchmark, generated from real Tux Paint photos and sounds.

Each clip is a scene: one sounding object (a cut-out photo) plus 1-2 silent distractor objects from
other classes on a background (a random two-colour pattern, or with `--background plain` a mid-grey
backdrop: the tiny DAG's benchmark), all of one size distribution (long side U(SIZE_RANGE) of
the frame), so size does not tell which object sounds (a sounding object that the distractors
mostly hide is drawn again on top); and 3 s of 16 kHz audio made from the sounding object's
real recording (another take: playback rate and spectral tilt varied; looped or cropped at a random
offset, random gain, pink background noise). Its class label,
the exact mask of the sounding object (visible pixels, from the alpha channels) and its box come
for free. One manifest serves classification, separation (pairs.csv), segmentation and localization.

    avfusion data make-tuxav --scale tiny --out data/tuxav-tiny --seed 0 --background plain

Layout (as Flickr-SoundNet / AVSBench): frames/{id}.jpg, audio/{id}.wav, masks/{id}.png (0/255), and
for every 16th clip videos/{id}.mp4 (h264 + AAC, no wav/jpg) so the video path is exercised too.
Same seed -> byte-identical files. Media are plain writes (no fsync per file, which dominated the
time); manifest.csv is written atomically and last, so it exists only when the whole folder does.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import av
import numpy as np
import soundfile
import torch
from PIL import Image

from .. import audio as audio_lib
from ..io import atomic_write_csv, atomic_write_json, atomic_write_text
from ..media import read_audio
from ..progress import Progress
from .manifest import PAIR_COLUMNS, SkipReport, write_manifest

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "tuxpaint"
# class -> Tux Paint stamps whose photo and sound make its clips (names of assets/tuxpaint/index.csv)
CLASS_STAMPS = {
    "songbird": ["blackbird", "cuckoo", "lark", "quetzal", "tucan"],
    "cattle": ["bison", "bull", "cow", "cow_white"],
    "percussion": ["cymbal_crash", "drum_tomtom_floor", "drumkit"],
    "pig": ["pig", "pig_golden", "pig_golden2"],
    "sea_mammal": ["dolphin", "orca", "sea_lion", "whale"],
    "insect": ["bee", "grasshopper", "hornet", "xanthia"],
    "waterbird": ["drake", "duck", "gander", "seagull", "penguin", "heron_greatblue_flying"],
    "poultry": ["hen", "rooster", "turkey", "nandou"],
    "raptor_crow": ["owl", "vulture", "crow"],
    "ape": ["chimp", "gorilla"],
    "goat_sheep": ["goat", "mountaingoat", "ram", "sheep", "sheep_lamb"],
    "big_cat": ["lion", "tiger"],
    "deer": ["caribou", "deer", "doe"],
    "equine": ["donkey", "horse", "zebra"],
    "rodent": ["beaver", "mouse", "rabbit", "squirrel"],
    "string_wind": ["cello", "violin", "bassoon"],
}
# stamps that only ever appear as silent distractors
DISTRACTOR_ONLY = ["frog", "iguana", "koala", "wombat", "camel", "dromedary", "badger", "bear",
                   "elephant", "ferret", "giraffe", "hippopotamus", "dog", "fox"]
# separation pairs across these groups are "easy", within one group "hard"
GROUPS = {"bird": ["songbird", "waterbird", "poultry", "raptor_crow"], "instrument": ["percussion", "string_wind"],
          "small": ["insect", "rodent"]}
SCALES = {  # classes = the first n of CLASS_STAMPS
    "smoke": {"classes": 6, "clips_per_class": 8, "frame_size": 96},
    "tiny": {"classes": 16, "clips_per_class": 120, "frame_size": 128},
}
VIDEO_EVERY = 16  # clip i with i % VIDEO_EVERY == VIDEO_EVERY // 2 is stored as an mp4
VIDEO_FPS = 4
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}
# long side of every object (sounding or silent) as a fraction of the frame side: one range for all,
# so an object's size does not tell which one sounds
SIZE_RANGE = (0.4, 0.65)


def read_index(asset_dir: Path = ASSET_DIR) -> dict[str, dict]:
    """Stamp name -> its row of index.csv (image, audio paths relative to `asset_dir`)."""
    with open(asset_dir / "index.csv", newline="") as fh:
        return {r["name"]: r for r in csv.DictReader(fh)}


def load_stamp(name: str, asset_dir: Path = ASSET_DIR) -> tuple[np.ndarray, torch.Tensor]:
    """RGBA photo `(h, w, 4)` uint8 and its sound as 16 kHz mono float32 `(n,)`."""
    index = read_index(asset_dir)
    if name not in index:
        raise KeyError(f"stamp {name!r} not in {asset_dir / 'index.csv'}")
    with Image.open(asset_dir / index[name]["image"]) as img:
        rgba = np.asarray(img.convert("RGBA"))
    return rgba, read_audio(asset_dir / index[name]["audio"])


def _group(cls: str) -> str:
    return next((g for g, members in GROUPS.items() if cls in members), "mammal")


# ------------------------------------------------------------------------------------- pictures

BACKGROUNDS = ("drawn", "plain")
PLAIN_GREY = 128.0


def make_background(rng: np.random.Generator, size: int, contrast: float = 1.0, background: str = "drawn") -> np.ndarray:
    """A procedural background `(size, size, 3)` float in [0, 255]. `drawn`: gradient, stripes, checks or blobs
    between two random colours, its deviations from its own mean colour scaled by `contrast` (1 = as drawn; the
    draws do not change). `plain`: a mid-grey backdrop (128) with the same light texture noise, no colour of its
    own (the two colours are still drawn, and nothing else, so a scene's later draws are those of the drawn kind's
    first two)."""
    if background not in BACKGROUNDS:
        raise ValueError(f"background {background!r}: choose from {BACKGROUNDS}")
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if background == "plain":
        return np.clip(np.full((size, size, 3), PLAIN_GREY) + rng.normal(0, 6, (size, size, 3)), 0, 255)
    yy, xx = np.mgrid[0:size, 0:size] / size  # (S, S) each
    kind = rng.integers(4)
    if kind == 0:  # linear gradient at a random angle
        angle = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(angle) + yy * np.sin(angle))
        t = (t - t.min()) / (np.ptp(t) + 1e-9)
    elif kind == 1:  # stripes
        freq, angle = rng.uniform(2, 8), rng.uniform(0, np.pi)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    elif kind == 2:  # checks
        n = rng.integers(3, 9)
        t = ((np.floor(xx * n) + np.floor(yy * n)) % 2) * 0.8 + 0.1
    else:  # smooth random blobs: a coarse grid upsampled bilinearly
        coarse = rng.uniform(0, 1, (5, 5)).astype(np.float32)
        t = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR), dtype=np.float64)
    img = c1 * (1 - t[..., None]) + c2 * t[..., None]  # (S, S, 3)
    img += rng.normal(0, 6, img.shape)  # light texture noise
    if contrast != 1.0:
        mean = img.mean(axis=(0, 1), keepdims=True)  # (1, 1, 3)
        img = mean + contrast * (img - mean)
    return np.clip(img, 0, 255)


def _place(rng: np.random.Generator, rgba: np.ndarray, size: int, scale: tuple[float, float]):
    """Resize a stamp so its long side is U(scale) * size, flip at random, and pick its top-left corner."""
    h, w = rgba.shape[:2]
    side = rng.uniform(*scale) * size
    nh, nw = max(4, int(round(h * side / max(h, w)))), max(4, int(round(w * side / max(h, w))))
    img = Image.fromarray(rgba).resize((nw, nh), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    top, left = int(rng.integers(0, size - nh + 1)), int(rng.integers(0, size - nw + 1))
    return np.asarray(img).astype(np.float64), top, left


def compose(rng: np.random.Generator, sounding: np.ndarray, distractors: list[np.ndarray],
            size: int, background_contrast: float = 1.0, background: str = "drawn") -> tuple[np.ndarray, np.ndarray]:
    """Frame `(S, S, 3)` uint8 and the visible mask of the sounding object `(S, S)` bool."""
    canvas = make_background(rng, size, background_contrast, background)
    layers = [(_place(rng, sounding, size, SIZE_RANGE), True)]
    layers += [(_place(rng, d, size, SIZE_RANGE), False) for d in distractors]
    order = list(rng.permutation(len(layers)))
    visible = np.zeros((size, size))
    own = np.zeros((size, size))
    for k in order:
        (img, top, left), is_sounding = layers[k]
        h, w = img.shape[:2]
        alpha = img[..., 3:] / 255.0  # (h, w, 1)
        region = canvas[top:top + h, left:left + w]
        canvas[top:top + h, left:left + w] = region * (1 - alpha) + img[..., :3] * alpha
        covered = np.zeros((size, size))
        covered[top:top + h, left:left + w] = alpha[..., 0]
        if is_sounding:
            own, visible = covered.copy(), covered.copy()
        else:
            visible *= 1 - covered  # later layers hide the sounding object
    mask = visible > 0.5
    if mask.sum() < 0.5 * (own > 0.5).sum():  # mostly hidden: draw the sounding object again on top
        (img, top, left), _ = layers[0]
        h, w = img.shape[:2]
        alpha = img[..., 3:] / 255.0
        region = canvas[top:top + h, left:left + w]
        canvas[top:top + h, left:left + w] = region * (1 - alpha) + img[..., :3] * alpha
        mask = own > 0.5
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8), mask


def mask_box(mask: np.ndarray) -> list[int]:
    """[x1, y1, x2, y2] pixel box of a mask, end exclusive (boxes_to_map fills [y1:y2, x1:x2])."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


# ---------------------------------------------------------------------------------------- sounds

SPEED_RANGE = (0.8, 1.25)  # playback-rate change: speed and pitch together (-3.9 to +3.9 semitones)
TILT_DB_PER_OCTAVE = 4.0  # random spectral tilt U(-4, 4) dB per octave around 1 kHz
SNR_DB = (5.0, 25.0)  # pink background noise


def vary_recording(rng: np.random.Generator, src: np.ndarray) -> np.ndarray:
    """Another take of the same sound: playback rate x U(0.8, 1.25) (linear interpolation) and a
    random spectral tilt, so a class is not one fixed spectrum."""
    rate = np.exp(rng.uniform(np.log(SPEED_RANGE[0]), np.log(SPEED_RANGE[1])))
    out = np.interp(np.arange(0, len(src) - 1, rate), np.arange(len(src)), src)
    freqs = np.fft.rfftfreq(len(out), 1 / audio_lib.SAMPLE_RATE)
    tilt = rng.uniform(-TILT_DB_PER_OCTAVE, TILT_DB_PER_OCTAVE)
    gain_db = np.clip(tilt * np.log2(np.maximum(freqs, 50.0) / 1000.0), -15, 15)
    return np.fft.irfft(np.fft.rfft(out) * 10 ** (gain_db / 20), n=len(out))


def crop_or_loop(rng: np.random.Generator, src: np.ndarray, n: int) -> np.ndarray:
    """`n` samples: a random crop if the recording is long enough, else loops with random gaps."""
    if len(src) >= n:
        start = int(rng.integers(0, len(src) - n + 1))
        return src[start:start + n].copy()
    pieces = [src[int(rng.integers(0, len(src))):]]
    total = len(pieces[0])
    while total < n:
        gap = np.zeros(int(rng.uniform(0, 0.3) * audio_lib.SAMPLE_RATE))
        pieces += [gap, src]
        total += len(gap) + len(src)
    return np.concatenate(pieces)[:n]


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS 1/f noise."""
    spec = np.fft.rfft(rng.normal(0, 1, n))
    spec /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / audio_lib.SAMPLE_RATE), 20.0))
    noise = np.fft.irfft(spec, n=n)
    return noise / np.sqrt(np.mean(noise ** 2))


def make_sound(rng: np.random.Generator, sound: torch.Tensor, n: int = audio_lib.CLIP_SAMPLES) -> np.ndarray:
    """The clip's 3 s: a varied take of the recording, cropped or looped, peak-normalised, gain
    U(-12, -3) dB, plus pink noise at an SNR of U(5, 25) dB (relative to the clip's RMS)."""
    out = crop_or_loop(rng, vary_recording(rng, sound.numpy().astype(np.float64)), n)
    peak = np.abs(out).max()
    out = out / peak if peak > 0 else out
    out *= 10 ** (rng.uniform(-12, -3) / 20)
    rms = np.sqrt(np.mean(out ** 2))
    out += pink_noise(rng, n) * rms * 10 ** (-rng.uniform(*SNR_DB) / 20)
    return np.clip(out, -1, 1).astype(np.float32)


def wav_bytes(wave: np.ndarray) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, wave, audio_lib.SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def write_mp4(path: Path, frame: np.ndarray, wave: np.ndarray) -> None:
    """A 3 s mp4 of the still scene (h264, 4 fps) with the clip's sound (AAC 16 kHz mono)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with av.open(str(tmp), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=VIDEO_FPS)
        video.width, video.height, video.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
        video.options = {"preset": "veryfast", "crf": "18"}
        video.codec_context.thread_count = 1  # single-threaded x264 is deterministic
        sound = container.add_stream("aac", rate=audio_lib.SAMPLE_RATE)
        sound.layout = "mono"
        for i in range(int(audio_lib.CLIP_SECONDS * VIDEO_FPS)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            container.mux(video.encode(vf))
        container.mux(video.encode())
        for s in range(0, len(wave), 1024):
            af = av.AudioFrame.from_ndarray(wave[None, s:s + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts = audio_lib.SAMPLE_RATE, s
            container.mux(sound.encode(af))
        container.mux(sound.encode())
    tmp.replace(path)


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


# ------------------------------------------------------------------------------------- benchmark

def plan_clips(scale: str, seed: int) -> list[dict]:
    """Class, split and per-clip seed of every clip; classes balanced, splits stratified."""
    spec = SCALES[scale]
    classes = list(CLASS_STAMPS)[:spec["classes"]]
    per_class = spec["clips_per_class"]
    n_eval = {s: max(1, int(round(f * per_class))) for s, f in SPLIT_FRACTIONS.items()}
    plan = []
    for c, cls in enumerate(classes):
        splits = ["val"] * n_eval["val"] + ["test"] * n_eval["test"]
        splits += ["train"] * (per_class - len(splits))
        for k, split in enumerate(splits):
            plan.append({"cls": cls, "split": split, "seed": [seed, c, k]})
    order = np.random.default_rng([seed, 999]).permutation(len(plan))
    plan = [plan[i] for i in order]  # interleave classes
    for i, item in enumerate(plan):
        item["clip_id"] = f"tuxav_{i:05d}"
        item["video"] = i % VIDEO_EVERY == VIDEO_EVERY // 2
    return plan


def make_pairs(rows: list[dict], seed: int) -> list[dict]:
    """Each val/test clip is paired once (as source 1) with a clip of another class in its split."""
    rng = np.random.default_rng([seed, 777])
    pairs = []
    for split in ("val", "test"):
        clips = [r for r in rows if r["split"] == split]
        for r in clips:
            others = [o for o in clips if o["label"] != r["label"]]
            partner = others[int(rng.integers(len(others)))]
            sep = "easy" if _group(r["label"]) != _group(partner["label"]) else "hard"
            pairs.append({"pair_id": f"{split}_{len(pairs):05d}", "split": split, "clip_id_1": r["clip_id"],
                          "clip_id_2": partner["clip_id"], "sep_type": sep})
    return pairs


def make_tuxav(out: str | Path, scale: str = "tiny", seed: int = 0, asset_dir: Path = ASSET_DIR,
               distractors: bool = True, background_contrast: float = 1.0,
               stamps_per_class: int | None = None, background: str = "drawn") -> dict:
    """Generate the benchmark into `out`; returns a summary (also written to `out/tuxav.json`).

    background: 'drawn' (random two-colour patterns, `background_contrast` scales them) or 'plain' (a mid-grey
    backdrop; the tiny scale's default, README "Scales"). stamps_per_class=K draws each class's sounding objects
    from its first K stamps (None: all).
    distractors=False draws every scene without its 1-2 silent objects (same clips, classes, splits and
    sounds drawn from the same per-clip seeds): the sounding object is then the only object, so finding it
    needs no audio (the segmentation learning test uses this to check the job's masks, not audio use)."""
    if scale not in SCALES:
        raise ValueError(f"unknown tuxav scale {scale!r}; choose from {sorted(SCALES)}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background {background!r}: choose from {BACKGROUNDS}")
    if background == "plain" and background_contrast != 1.0:
        raise ValueError(f"background_contrast {background_contrast}: it scales drawn backgrounds only, "
                         "not the plain one")
    out = Path(out)
    (out / "manifest.csv").unlink(missing_ok=True)  # a half-regenerated folder never looks finished
    (out / "decoded.pt").unlink(missing_ok=True)    # `make-tuxav --decoded` writes it again, after the manifest
    spec = SCALES[scale]
    plan = plan_clips(scale, seed)
    classes = list(CLASS_STAMPS)[:spec["classes"]]
    names = sorted({s for c in classes for s in CLASS_STAMPS[c]} | set(DISTRACTOR_ONLY))
    stamps = {name: load_stamp(name, asset_dir) for name in names}
    for sub in ("frames", "audio", "masks", "videos"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows, size = [], spec["frame_size"]
    progress = Progress(total=len(plan), desc=f"make-tuxav {scale}", every=max(1, len(plan) // 10))
    for item in plan:
        rng = np.random.default_rng(item["seed"])
        own = CLASS_STAMPS[item["cls"]][:stamps_per_class]  # None: every stamp of the class
        stamp = own[int(rng.integers(len(own)))]
        pool = [s for s in names if s not in CLASS_STAMPS[item["cls"]]]
        picks = rng.choice(len(pool), size=int(rng.integers(1, 3)), replace=False)
        picks = picks if distractors else picks[:0]
        frame, mask = compose(rng, stamps[stamp][0], [stamps[pool[i]][0] for i in picks], size,
                              background_contrast, background)
        wave = make_sound(rng, stamps[stamp][1])
        cid = item["clip_id"]
        row = {"clip_id": cid, "split": item["split"], "video": "", "audio": "", "frame": "",
               "start": "0.0", "end": f"{audio_lib.CLIP_SECONDS:.1f}", "label": item["cls"],
               "mask": f"masks/{cid}.png", "boxes": json.dumps([[mask_box(mask)]]),
               "frame_time": f"{audio_lib.CLIP_SECONDS / 2:.1f}", "source": f"tuxpaint:{stamp}"}
        (out / row["mask"]).write_bytes(_png_bytes(mask.astype(np.uint8) * 255))
        if item["video"]:
            row["video"] = f"videos/{cid}.mp4"
            write_mp4(out / row["video"], frame, wave)
        else:
            row["frame"], row["audio"] = f"frames/{cid}.jpg", f"audio/{cid}.wav"
            (out / row["frame"]).write_bytes(_jpg_bytes(frame))
            (out / row["audio"]).write_bytes(wav_bytes(wave))
        rows.append(row)
        progress.update()
    pairs = make_pairs(rows, seed)
    atomic_write_csv(out / "pairs.csv", pairs, PAIR_COLUMNS)
    summary = {"scale": scale, "seed": seed, "distractors": distractors, "background": background,
               "background_contrast": background_contrast, "stamps_per_class": stamps_per_class, "frame_size": size,
               "classes": {c: CLASS_STAMPS[c][:stamps_per_class] for c in classes},
               "distractor_only": DISTRACTOR_ONLY, "clips": {s: sum(r["split"] == s for r in rows)
                                                               for s in ("train", "val", "test")},
               "videos": sum(bool(r["video"]) for r in rows), "pairs": len(pairs),
               "source": "Tux Paint stamps (GPL-2), see avfusion/data/assets/tuxpaint/README.md"}
    atomic_write_json(out / "tuxav.json", summary)
    report = SkipReport()
    report.keep(len(rows))
    atomic_write_json(out / "report.json", report.to_dict())
    atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in classes))
    write_manifest(out, rows)  # last: manifest.csv exists only when every other file does
    return summary


def class_colour_frames(src: str | Path, out: str | Path, seed: int = 5) -> Path:
    """A copy of the manifest folder `src` (rows, classes, pairs.csv; media read from `src`) in which every
    clip's frame is its class's own flat colour (one PNG per class in `out/frames`): a frame that names the
    sounding class for sure, whatever the crop or flip. A diagnostic, not a benchmark: it separates what a
    task's head can learn from what the image branch reads (tests/test_separation_task.py,
    benchmarks/separation_budget.py). Returns `out`.

        avfusion data make-tuxav --scale tiny --out data/tuxav-tiny --background plain
        python -c "from avfusion.data.tuxav import class_colour_frames as f; f('data/tuxav-tiny', 'data/class-frames')"
    """
    from .manifest import read_classes, read_manifest

    src, out = Path(src), Path(out)
    classes = read_classes(src)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    for name in classes:
        colour = gen.integers(0, 256, 3).astype(np.uint8)
        (out / "frames" / f"{name}.png").write_bytes(_png_bytes(np.broadcast_to(colour, (128, 128, 3)).copy()))
    rows = read_manifest(src / "manifest.csv")  # path columns absolute
    for row in rows:
        row["frame"] = str(out / "frames" / f"{row['label']}.png")  # a clip stored as mp4 keeps its audio there
    atomic_write_text(out / "pairs.csv", (src / "pairs.csv").read_text())
    write_manifest(out, rows, classes=classes)  # last, as make_tuxav
    return out


def build_assets(src: Path, dst: Path = ASSET_DIR, max_side: int = 160) -> None:
    """Copy the stamps of shared/testdata/tuxpaint_image_sound into `dst` (done once; the result is
    committed): photos downscaled to `max_side` (RGBA PNG), sounds copied unchanged (ogg)."""
    import shutil

    rows = list(read_index(Path(src)).values())
    for row in rows:
        with Image.open(Path(src) / row["image"]) as img:
            img = img.convert("RGBA")
            img.thumbnail((max_side, max_side), Image.LANCZOS)
            row["width"], row["height"] = img.size
            (dst / row["image"]).parent.mkdir(parents=True, exist_ok=True)
            img.save(dst / row["image"], format="PNG", optimize=True)
        shutil.copyfile(Path(src) / row["audio"], dst / row["audio"])
    atomic_write_csv(dst / "index.csv", rows, list(rows[0]))
    shutil.copyfile(Path(src) / "COPYRIGHT.debian.txt", dst / "COPYRIGHT.debian.txt")
