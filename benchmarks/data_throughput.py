"""Training-item throughput of the data paths: items/s per core, raw mp4 (today's code and the new
reader) against the prepared form, train and eval transforms, 1..N DataLoader workers.

    .venv/bin/python benchmarks/data_throughput.py --workers 1 2 --tag dev-vm   # ~15 min on 2 busy cores
    .venv/bin/python benchmarks/data_throughput.py --paired-only --no-testdata-set  # paired + alone rows

Items are `AVClipDataset` items at the paper's size (image 224, 3 s audio -> (1, 128, 192)), through
a DataLoader (batch 32). Paths:
  today             benchmarks/legacy_media.py, the code before issue 16: its readers (frame nearest t,
                    every decoded frame converted to RGB, full size), float image transforms, log-mel
  raw               the new reader, default options (frame nearest t, full size: the same items)
  raw-s256          + decode_short_side=256 (the decoder scales the frame; eval resize 256 is a no-op)
  raw-keyframe      + frame_rule="keyframe" (the official rule: the keyframe at or before t), full size
  raw-keyframe-s256 + both
  prepared          `avfusion data cache --short-side 256` (the build is timed too): JPEG frames, the
                    window's start on the hop grid and its log-mel sliced from the stored mel power
  prepared-rgb      + `--frame-format raw`: the frames as uint8 arrays (no JPEG decoding; ~17x the bytes)
  prepared-u8       prepared, with `data.train_image_dtype: uint8`: train items carry the uint8 crop (1/4 of
                    the image bytes through the DataLoader), normalised by the engine on the device, which
                    is not counted here (eval items are float32 in every path: the same as prepared there)
"alone" rows: each prepared path by itself in one process over 1300 items (no DataLoader, nothing
interleaved: the paired rows leave it caches cooled by 720p decoding), items per CPU-second.
"per core" is items per CPU-second of the whole loader (main process + workers, from getrusage),
so the worker count changes it little; wall items/s is given beside. The headline ratios come
from a paired run: every path on the same 39 items (same clips, same random draws), interleaved
item by item in one process, so a load that drifts weighs on all paths alike. Then each
(transform, workers) configuration runs through a DataLoader in its own process, the paths of one
group back to back. Clip sets: the 13 YouTube-shaped clips of
`youtube_like_clips.py` (360p/720p H.264, default GOP; the main figures) and, smaller, the real
testdata mp4s as shipped (224x224 at 1 fps or one still frame: little video to decode).
Writes benchmarks/results/data_throughput.csv and prints the Markdown table of benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

PATHS = {  # name -> (media, dataset options); "today" uses the frozen readers
    "today": ("legacy", {}),
    "raw": ("raw", {}),
    "raw-s256": ("raw", {"decode_short_side": 256}),
    "raw-keyframe": ("raw", {"frame_rule": "keyframe"}),
    "raw-keyframe-s256": ("raw", {"frame_rule": "keyframe", "decode_short_side": 256}),
    "prepared": ("prepared", {}),
    "prepared-rgb": ("prepared-rgb", {}),
    "prepared-u8": ("prepared", {"train_image_dtype": "uint8"}),
}
ITEMS = {"today": 64, "raw": 64, "raw-s256": 64, "raw-keyframe": 128, "raw-keyframe-s256": 192, "prepared": 1280,
         "prepared-rgb": 1280, "prepared-u8": 1280}
BATCH = 32


def _legacy_dataset(base):
    import legacy_media
    import torch

    class TodayClipDataset(base):
        """AVClipDataset reading through the frozen pre-issue-16 readers, image transforms and log-mel."""

        def waveform(self, row, t0, t1):
            from avfusion import audio as audio_lib

            wave = legacy_media.read_audio(row.get("audio") or row["video"], t0, t1)
            if not bool(torch.isfinite(wave).all()):
                raise legacy_media.MediaError(f"{row['clip_id']}: non-finite audio")
            return audio_lib.pad_or_trim(wave)

        def audio_item(self, row, gain):
            from avfusion import audio as audio_lib

            t0, t1, centre = self.window(row)
            wave = self.waveform(row, t0, t1)
            if gain and self.train:
                wave = audio_lib.random_gain(wave)
            return legacy_media.legacy_log_mel(wave), t0, t1, centre

        def image(self, frame):
            if self.train:
                return legacy_media.legacy_train_image(frame, self.image_size)
            return legacy_media.legacy_eval_image(frame, self.image_size)

        def frame(self, row, t0, t1, centre, annotated=False):
            from avfusion.data.datasets import _uniform

            if row.get("frame"):
                return legacy_media.read_frame(row["frame"])
            t = _uniform(t0, t1) if self.train else centre
            return legacy_media.read_frame(row["video"], t)

    return TodayClipDataset


def _dataset(path: str, spec: dict):
    """The `AVClipDataset` of one benchmark path (`PATHS`) over the spec's raw or prepared folder, with
    every clip's span probed once (outside any timing: every path needs them)."""
    from avfusion.data.datasets import AVClipDataset

    media, options = PATHS[path]
    folder = {"prepared": spec["prepared_dir"], "prepared-rgb": spec.get("prepared_rgb_dir")}.get(media, spec["raw_dir"])
    cls = _legacy_dataset(AVClipDataset) if media == "legacy" else AVClipDataset
    ds = cls(folder, "train", train=spec["transform"] == "train", image_size=224,
             **dict(options, media="prepared" if media.startswith("prepared") else "raw"))
    for row in ds.rows:
        ds.span(row)
    return ds


def _random_order(n_clips: int, items: int) -> list[int]:
    """`items` clip indices in a random order (every clip about equally often)."""
    import torch

    return (torch.randperm(n_clips * (items // n_clips + 1))[:items] % n_clips).tolist()


def measure(spec: dict) -> dict:
    """One configuration, in this process: items through a DataLoader, CPU of all its processes."""
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = _dataset(spec["path"], spec)
    loader = DataLoader(ds, batch_size=BATCH, sampler=_random_order(len(ds), spec["items"]), num_workers=spec["workers"],
                        worker_init_fn=lambda _: torch.set_num_threads(1))
    r0s, r0c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch["image"].shape[0]
    del loader  # workers exit and are reaped: their CPU time lands in RUSAGE_CHILDREN
    wall = time.perf_counter() - t0
    r1s, r1c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(getattr(r1, f) - getattr(r0, f) for r0, r1 in ((r0s, r1s), (r0c, r1c)) for f in ("ru_utime", "ru_stime"))
    return {"items": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}


def paired(spec: dict) -> dict:
    """Every path on the same items, interleaved item by item in one process (no DataLoader):
    path p's CPU seconds for item k are measured right after path p-1's, with the same torch seed,
    so a load that drifts during the run weighs on every path alike. Cheap paths repeat each item
    (`repeats`) to be timed over a comparable span. Every path also repeats each item `best_of` times
    (each repeat timed alone, same seed): the smallest of those is the item's least-disturbed cost on a
    shared machine (as timeit reports). Returns {path: [mean cpu seconds per item, sum of the per-item
    minima / items]}."""
    import torch

    torch.set_num_threads(1)
    # the CPU generator only: the same draws as torch.manual_seed, without its 0.18 ms of CUDA/XPU/MTIA
    # lazy-init bookkeeping (a stack trace each), which is no part of an item's cost
    seed = torch.random.default_generator.manual_seed
    sets = {path: _dataset(path, spec) for path in spec["paths"]}
    n_clips = len(next(iter(sets.values())))
    cost, best = {path: 0.0 for path in sets}, {path: 0.0 for path in sets}
    for k in range(spec["items"]):
        for path, ds in sets.items():
            repeats = spec["repeats"] if path.startswith("prepared") or "keyframe" in path else 1
            times = []
            for _ in range(spec.get("best_of", 1)):
                t0 = time.process_time()
                for _ in range(repeats):
                    seed(1000 + k)
                    ds[k % n_clips]
                times.append((time.process_time() - t0) / repeats)
            cost[path] += sum(times) / len(times)
            best[path] += min(times)
    return {path: [cost[path] / spec["items"], best[path] / spec["items"]] for path in sets}


def alone(spec: dict) -> dict:
    """One path by itself in this process (no DataLoader, nothing interleaved): `items` items in a
    random order over the clips (random windows and frames, train or eval transforms), CPU seconds
    per item. The paired rows interleave the prepared path with 720p decoding, which leaves it cold
    caches; this is the prepared path as a loader worker that reads only prepared shards runs it."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = _dataset(spec["path"], spec)
    order = _random_order(len(ds), spec["items"])
    for k in order[:len(ds)]:  # warm-up: imports, first opens, lazy tables
        ds[k]
    t0 = time.process_time()
    for k in order:
        ds[k]
    return {"items": len(order), "cpu_s": round(time.process_time() - t0, 3)}


def _in_subprocess(spec: dict) -> tuple[dict, float, float]:
    """Run one measurement (`--measure spec`) in a fresh process: (its result, 1-min load before, after)."""
    load = _load()
    out = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec)], check=True,
                         capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1]), load, _load()


def _load() -> float:
    return os.getloadavg()[0]


def _manifest(folder: Path, videos: list[Path]) -> Path:
    from avfusion.data.manifest import write_manifest

    rows = [{"clip_id": f"{i:03d}_{p.stem[:40]}", "split": "train", "video": str(p), "label": "clip"}
            for i, p in enumerate(videos)]
    write_manifest(folder, rows, classes=["clip"])
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--transforms", nargs="+", default=["train", "eval"])
    parser.add_argument("--paths", nargs="+", default=list(PATHS))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the item counts")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "avfusion" / "data_throughput")
    parser.add_argument("--testdata", type=Path, default=REPO.parent / "shared" / "testdata")
    parser.add_argument("--no-testdata-set", action="store_true", help="skip the as-shipped testdata clips")
    parser.add_argument("--tag", default=platform.node())
    parser.add_argument("--out", type=Path, default=HERE / "results" / "data_throughput.csv")
    parser.add_argument("--paired-only", action="store_true", help="only the paired and alone rows (no DataLoader rows)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        spec = json.loads(args.measure)
        kind = "paired" if spec.get("paired") else spec.get("kind", "measure")
        print(json.dumps({"paired": paired, "alone": alone, "measure": measure}[kind](spec)))
        return 0

    from youtube_like_clips import make_clips

    from avfusion.data.prepared import cache_manifest

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = _load()
    sets = {"youtube-like": make_clips(args.testdata, args.work / "clips")}
    if not args.no_testdata_set:
        sets["testdata"] = sorted(args.testdata.glob("**/*.mp4"))
    dirs = {}
    for name, videos in sets.items():
        raw = _manifest(args.work / f"{name}-raw", videos)
        for suffix, frame_format in (("", "jpeg"), ("-rgb", "raw")):
            t0 = time.perf_counter()
            prepared = args.work / f"{name}-prepared{suffix}"
            options = dict(workers=max(args.workers), short_side=256, clips_per_shard=4, frame_format=frame_format)
            try:
                report = cache_manifest(raw, prepared, **options)
            except ValueError as err:  # made by an older format or with other settings: make it again
                print(f"{prepared}: {err}: made again", flush=True)
                shutil.rmtree(prepared)
                report = cache_manifest(raw, prepared, **options)
            size = sum(f.stat().st_size for f in (prepared / "prepared").glob("shard-*.tar"))
            print(f"{name}: prepared ({frame_format} frames) {report['prepared']} clips in "
                  f"{time.perf_counter() - t0:.1f} s (kept {report['resumed_shards']} shards of an earlier run), "
                  f"unreadable {report['unreadable']}, shards {size / 1e6:.1f} MB", flush=True)
        dirs[name] = (raw, args.work / f"{name}-prepared", args.work / f"{name}-prepared-rgb")

    rows = []
    for transform in args.transforms:  # the headline ratios: paired, interleaved, in one process
        spec = {"paired": True, "paths": args.paths, "transform": transform, "items": int(39 * args.scale),
                "repeats": 5, "best_of": 3, "raw_dir": str(dirs["youtube-like"][0]), "prepared_dir": str(dirs["youtube-like"][1]),
                "prepared_rgb_dir": str(dirs["youtube-like"][2])}
        per_item, load, load_end = _in_subprocess(spec)
        for path, (seconds, least) in per_item.items():
            row = {"clipset": "youtube-like", "path": path, "transform": transform, "workers": "paired",
                   "items": spec["items"], "cpu_s": round(seconds * spec["items"], 3),
                   "items_per_cpu_s": round(1 / seconds, 2), "items_per_cpu_s_best": round(1 / least, 2),
                   "load_1min": round(load, 1), "load_1min_end": round(load_end, 1)}
            if "today" in per_item:
                row["x_today"] = round(per_item["today"][0] / seconds, 2)
                row["x_today_best"] = round(per_item["today"][1] / least, 2)
            if "raw" in per_item:
                row["x_raw"] = round(per_item["raw"][0] / seconds, 2)
                row["x_raw_best"] = round(per_item["raw"][1] / least, 2)
            rows.append(row)
            print(f"paired {transform:5s} {path:18s} {row['items_per_cpu_s']:8.2f} items/cpu-s "
                  f"(best of 3: {row['items_per_cpu_s_best']:.2f}) x today {row.get('x_today', '')} "
                  f"({row.get('x_today_best', '')}) (load {load:.1f}-{load_end:.1f})", flush=True)
    for transform in args.transforms:  # each prepared path by itself, in one process
        for path in [p for p in ("prepared", "prepared-rgb") if p in args.paths]:
            spec = {"kind": "alone", "path": path, "transform": transform, "items": int(1300 * args.scale),
                    "raw_dir": str(dirs["youtube-like"][0]), "prepared_dir": str(dirs["youtube-like"][1]),
                    "prepared_rgb_dir": str(dirs["youtube-like"][2])}
            result, load, load_end = _in_subprocess(spec)
            row = {"clipset": "youtube-like", "path": path, "transform": transform, "workers": "alone",
                   **result, "items_per_cpu_s": round(result["items"] / result["cpu_s"], 2),
                   "load_1min": round(load, 1), "load_1min_end": round(load_end, 1)}
            rows.append(row)
            print(f"alone  {transform:5s} {path:12s} {row['items_per_cpu_s']:8.2f} items/cpu-s "
                  f"(load {load:.1f}-{load_end:.1f})", flush=True)
    plan = [] if args.paired_only else [("youtube-like", tr, w, args.paths) for tr in args.transforms
                                        for w in args.workers]
    if "testdata" in dirs and not args.paired_only:
        plan.append(("testdata", "train", 1, [p for p in ("today", "raw", "raw-keyframe-s256", "prepared", "prepared-rgb")
                                              if p in args.paths]))
    for clipset, transform, workers, paths in plan:
        group = {}
        for path in paths:
            spec = {"path": path, "transform": transform, "workers": workers,
                    "items": max(8, int(ITEMS[path] * args.scale)),
                    "raw_dir": str(dirs[clipset][0]), "prepared_dir": str(dirs[clipset][1]),
                    "prepared_rgb_dir": str(dirs[clipset][2])}
            result, load, _ = _in_subprocess(spec)
            row = {"clipset": clipset, "path": path, "transform": transform, "workers": workers, **result,
                   "items_per_s": round(result["items"] / result["wall_s"], 2),
                   "items_per_cpu_s": round(result["items"] / result["cpu_s"], 2), "load_1min": round(load, 1)}
            group[path] = row
            rows.append(row)
            print(f"{clipset:12s} {transform:5s} workers={workers} {path:18s} {row['items_per_cpu_s']:8.2f} items/cpu-s "
                  f"{row['items_per_s']:8.2f} items/s (load {load:.1f})", flush=True)
        for row in group.values():
            if "today" in group:
                row["x_today"] = round(row["items_per_cpu_s"] / group["today"]["items_per_cpu_s"], 2)
            if "raw" in group:
                row["x_raw"] = round(row["items_per_cpu_s"] / group["raw"]["items_per_cpu_s"], 2)
    import av
    import torch

    meta = {"date": started, "tag": args.tag, "cores": os.cpu_count(), "load_start": round(load_start, 1),
            "load_end": round(_load(), 1), "torch": torch.__version__, "av": av.__version__,
            "cpu": _cpu_model()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    columns = ["date", "tag", "cores", "cpu", "torch", "av", "clipset", "path", "transform", "workers", "items",
               "wall_s", "cpu_s", "items_per_s", "items_per_cpu_s", "items_per_cpu_s_best", "x_today",
               "x_today_best", "x_raw", "x_raw_best", "load_1min", "load_1min_end"]
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: {**meta, **row}.get(c, "") for c in columns})
    print(f"\n{meta}\n")
    print("| clips | transform | workers | path | items/s per core (best of 3) | items/s (wall) | x today (best) "
          "| x raw (best) | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        wall = f"{r['items_per_s']:.1f}" if "items_per_s" in r else "-"
        per_core = f"{r['items_per_cpu_s']:.1f}" + (f" ({r['items_per_cpu_s_best']:.1f})" if "items_per_cpu_s_best" in r
                                                    else "")
        x_today = f"{r.get('x_today', '')}" + (f" ({r['x_today_best']})" if "x_today_best" in r else "")
        x_raw = f"{r.get('x_raw', '')}" + (f" ({r['x_raw_best']})" if "x_raw_best" in r else "")
        load = f"{r['load_1min']}" + (f"-{r['load_1min_end']}" if "load_1min_end" in r else "")
        print(f"| {r['clipset']} | {r['transform']} | {r['workers']} | {r['path']} | {per_core} | "
              f"{wall} | {x_today} | {x_raw} | {load} |")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
