"""13 clips shaped like the AVSBench / VGGSound downloads, made from the real media in shared/testdata.

    .venv/bin/python benchmarks/youtube_like_clips.py --out /tmp/ytclips   # ~1 min, cached by name

The real mp4s in testdata are tiny (224x224 at 1 fps, or one still frame), so decoding them costs
little and says nothing about the issue's 360p-720p YouTube clips. Each clip here keeps one real
source's pictures and sound and gives them the shape of a dataset clip: 5 s, H.264 at 1280x720 / 30
fps (even index) or 640x360 / 25 fps (odd index), libx264 with its default GOP (keyint 250 plus
scene cuts: what `ffmpeg -ss .. -t ..` cutting with default settings gives, as for AVSBench and
VGGSound) at YouTube's delivered H.264 rates (1.8 Mbit/s at 720p, 0.7 Mbit/s at 360p), AAC 44.1 kHz
stereo. The pictures pan slowly across the upscaled real frame (the frames change at the source's
own times) with sensor-like noise (Gaussian, sigma 4 grey levels), so P/B frames carry motion and
the bits a camera clip spends; the sound is the real clip's audio, resampled and looped to 5 s.
Synthetic motion and noise over real content: say so wherever a number measured on these clips
is quoted.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import av
import numpy as np
from PIL import Image

SOURCES = sorted(["clipsep_mixtures/music-vggsound/accordion-PohzBumrY2Q+K-8KURljE8_FA/av.mp4",
                  "clipsep_mixtures/music-vggsound/acoustic_guitar-X4UWEifacwI+H-2HSizQ0OJHM/av.mp4",
                  "clipsep_mixtures/music-vggsound/violin-WjwOm5pJlI0+3-O3HG59u1yek/av.mp4",
                  "clipsep_mixtures/vggsound-vggsound/3-x3HIdaOkLQ4+3-43FtU9nHMxc/av.mp4",
                  "clipsep_mixtures/vggsound-vggsound/G-gGeyOIugeEs+M-lMei2nMceX4/av.mp4",
                  "clipsep_mixtures/vggsound-vggsound/u-6uCeOOJXK24+X-lX8Csm309Ls/av.mp4",
                  "clipsep_mixtures/vggsound/3-23kti2LQUdw/av.mp4",
                  "clipsep_mixtures/vggsound/e-xe7opvK-LJg/av.mp4",
                  "clipsep_mixtures/vggsound/v-hvCj8Dk0Su4/av.mp4"]) + [
    f"deepavfusion/demos/demo{k}_orig.mp4" for k in (1, 2, 3, 4)]
SECONDS = 5.0
AUDIO_RATE = 44100


def _source(path: Path) -> tuple[list[tuple[float, np.ndarray]], np.ndarray, int]:
    """[(time, rgb frame)], audio (C, n) float32, audio rate of a real mp4."""
    with av.open(str(path)) as c:
        frames = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    audio = np.concatenate([x if x.ndim == 2 else x[None] for x in chunks], axis=-1).astype(np.float32)
    return frames, audio, rate


def make_clip(src: Path, out: Path, width: int, height: int, fps: int, seed: int, bitrate: int) -> None:
    frames, audio, rate = _source(src)
    rng = np.random.default_rng(seed)
    zoom = 1.2
    direction = rng.uniform(-1, 1, size=2)
    tmp = out.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as c:
        v = c.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        v.bit_rate = bitrate
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = c.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        big_w, big_h = int(width * zoom), int(height * zoom)
        cache: dict[int, Image.Image] = {}
        for j in range(int(SECONDS * fps)):
            t = j / fps
            k = max(i for i, (ts, _) in enumerate(frames) if ts <= t or i == 0)
            if k not in cache:
                cache[k] = Image.fromarray(frames[k][1]).resize((big_w, big_h), Image.BILINEAR)
            s = t / SECONDS  # pan 0 -> 1 over the clip
            x0 = int((big_w - width) * (0.5 + 0.5 * direction[0] * (2 * s - 1)))
            y0 = int((big_h - height) * (0.5 + 0.5 * direction[1] * (2 * s - 1)))
            img = np.asarray(cache[k].crop((x0, y0, x0 + width, y0 + height)), dtype=np.float32)
            img = np.clip(img + rng.normal(0, 4, size=(height, width, 1)).astype(np.float32), 0, 255)
            img = img.astype(np.uint8)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = j
            c.mux(v.encode(vf))
        c.mux(v.encode())
        mono = audio.mean(axis=0)
        n_out = int(SECONDS * AUDIO_RATE)
        src_t = np.arange(n_out) / AUDIO_RATE % (len(mono) / rate)  # looped
        wave = np.interp(src_t, np.arange(len(mono)) / rate, mono).astype(np.float32)
        stereo = np.stack([wave, wave])  # (2, n)
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        for i in range(0, n_out, 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, i:i + 1024]), format="fltp",
                                            layout="stereo")
            af.sample_rate, af.pts = AUDIO_RATE, i
            for r in resampler.resample(af):
                c.mux(a.encode(r))
        c.mux(a.encode())
    tmp.replace(out)


def make_clips(testdata: Path, out_dir: Path) -> list[Path]:
    """The 13 clips (made once; an existing clip of the same name is kept)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rel in enumerate(SOURCES):
        width, height, fps, rate = (1280, 720, 30, 1_800_000) if i % 2 == 0 else (640, 360, 25, 700_000)
        name = f"yt{i:02d}_{height}p_{Path(rel).parent.name[:24] if 'clipsep' in rel else Path(rel).stem}.mp4"
        path = out_dir / name
        if not path.is_file():
            make_clip(testdata / rel, path, width, height, fps, seed=i, bitrate=rate)
        paths.append(path)
    (out_dir / "sources.json").write_text(json.dumps({p.name: s for p, s in zip(paths, SOURCES)}, indent=1))
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testdata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for p in make_clips(args.testdata, args.out):
        print(p)
