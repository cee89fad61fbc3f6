"""`avfusion data ...`: build manifests.

    avfusion data make-tuxav --scale tiny --out data/tuxav-tiny --seed 0     # the embedded benchmark
    avfusion data prepare vggsound --root /data/vggsound --out data/vggsound  # an official layout
    avfusion data cache --manifest data/vggsound --out data/vggsound-prepared --workers 16  # fast media
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


# what each `data prepare` key reads (its parser: avfusion/data/layouts/<module>.py)
DATASET_HELP = {
    "vggsound": "VGGSound, classification (309 classes); pretraining, Tables 3-7",
    "audioset": "AudioSet, multi-label classification (527 classes); pretraining of the AudioSet model",
    "audioset_bal_orig": "AudioSet with the original balanced_train segments",
    "vggsound_music": "VGGSound-Music (49 music classes): separation pairs + classification, Tables 1, 3-6",
    "vggsound_instruments": "VGGSound-Instruments: separation pairs, Table 1",
    "music": "MUSIC (solo + duet videos)",
    "music_solo": "MUSIC solo videos (11 instruments)",
    "music_solo21": "MUSIC-21 solo videos (21 instruments)",
    "music_duet": "MUSIC duet videos: separation pairs, Table 1",
    "avsbench_s4": "AVSBench S4 (single source) segmentation, Table 2",
    "avsbench_ms3": "AVSBench MS3 (multiple sources) segmentation",
    "avsbench_avss": "AVSBench AVSS (semantic) segmentation, Tables 2, 4-6",
    "flickr_soundnet": "Flickr-SoundNet sound source localization (test boxes), Table 7",
    "vggss": "VGG-SS (VGG-Sound Source) localization test set (EZ-VSL / LVS layout)",
}


def datasets_epilog() -> str:
    """`DATASET` choices of `data prepare`, one a line."""
    from . import layouts

    lines = ["datasets (DATASET):"]
    width = max(len(name) for name in layouts.DATASETS)
    for name in layouts.DATASETS:
        if name in layouts.ALIASES:
            text = f"same as {layouts.ALIASES[name]} (the official code's key)"
        else:
            text = DATASET_HELP.get(name, f"parser avfusion/data/layouts ({name})")
        lines.append(f"  {name:<{width}}  {text}")
    lines.append("Official layouts and where to download them: README.md, section \"Data\".")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    make = sub.add_parser("make-tuxav", help="generate the embedded mini benchmark from the Tux Paint stamps")
    make.add_argument("--scale", choices=["smoke", "tiny"], default="tiny")
    make.add_argument("--out", type=Path, required=True, help="output folder (manifest.csv, media, pairs.csv)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--no-distractors", dest="distractors", action="store_false",
                      help="draw every scene without its silent objects (the sounding object alone)")
    make.add_argument("--background-contrast", type=float, default=1.0, metavar="C",
                      help="scale each background's deviations from its mean colour by C (default 1: as drawn)")
    make.add_argument("--background", choices=["drawn", "plain"], default="drawn",
                      help="drawn (default): random two-colour patterns; plain: a mid-grey backdrop with light noise")
    make.add_argument("--stamps-per-class", type=int, default=None, metavar="K",
                      help="draw each class's sounding objects from its first K stamps only (default: all)")
    make.add_argument("--decoded", action="store_true",
                      help="also write decoded.pt: every clip decoded once, read by jobs with data.cache_decoded")
    prep = sub.add_parser("prepare", help="parse a dataset in its official layout into a manifest",
                          description="Parse a dataset in its official layout into DIR/manifest.csv.",
                          epilog=datasets_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    prep.add_argument("dataset", metavar="DATASET", help="dataset key (listed below)")
    prep.add_argument("--root", type=Path, required=True, help="the dataset's root folder")
    prep.add_argument("--out", type=Path, required=True, help="output folder for manifest.csv")
    prep.add_argument("--no-media-check", action="store_true",
                      help="trust the file tree: do not open every media file while parsing")


    cache = sub.add_parser("cache", help="decode every clip of a manifest once into shards that training "
                           "reads fast (frames as JPEG at a short side + 16 kHz audio); resumable")
    cache.add_argument("--manifest", type=Path, required=True, help="a manifest folder (manifest.csv, ...)")
    cache.add_argument("--out", type=Path, required=True,
                       help="output manifest folder; tasks read its prepared shards instead of the raw files")
    cache.add_argument("--workers", type=int, default=1, help="processes (one shard each at a time)")
    cache.add_argument("--short-side", type=int, default=256,
                       help="short side of the kept frames (256 = int(224 / 0.875), the eval resize at 224)")
    cache.add_argument("--frame-stride", type=int, default=16,
                       help="keep every Nth frame (16: the official re-encode's keyframe interval)")
    cache.add_argument("--jpeg-quality", type=int, default=90)
    cache.add_argument("--frame-format", choices=["jpeg", "raw"], default="jpeg",
                       help="jpeg (default) or raw: uint8 RGB arrays, no decoding per item, ~17x the bytes")
    cache.add_argument("--clips-per-shard", type=int, default=64)


def _cache(args: argparse.Namespace) -> int:
    from .prepared import cache_manifest

    report = cache_manifest(args.manifest, args.out, workers=args.workers, short_side=args.short_side,
                            frame_stride=args.frame_stride, jpeg_quality=args.jpeg_quality,
                            clips_per_shard=args.clips_per_shard, frame_format=args.frame_format)
    print(f"cache {args.manifest} -> {args.out}: prepared {report['prepared']} of {report['clips']} clips, "
          f"unreadable {report['unreadable']} (named in {args.out / 'prepared' / 'report.json'}); "
          f"{report['resumed_shards']} shards kept from an earlier run, {report['prepared_shards']} written")
    for bad in report["unreadable_clips"][:10]:
        print(f"  unreadable: {bad['clip_id']} ({bad['file']}): {bad['reason']}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.data_command == "cache":
        return _cache(args)
    if args.data_command == "make-tuxav":
        from .tuxav import make_tuxav

        t0 = time.perf_counter()
        summary = make_tuxav(args.out, args.scale, args.seed, distractors=args.distractors,
                             background_contrast=args.background_contrast, stamps_per_class=args.stamps_per_class,
                             background=args.background)
        if args.decoded:
            from .datasets import write_decoded

            print(f"decoded clips -> {write_decoded(args.out)}")
        print(f"tuxav {args.scale} (seed {args.seed}) -> {args.out}: {summary['clips']} clips, "
              f"{len(summary['classes'])} classes, {summary['pairs']} pairs, "
              f"{time.perf_counter() - t0:.1f} s")
        return 0
    from . import layouts  # imported only for this subcommand

    if args.dataset not in layouts.DATASETS:
        print(f"error: unknown dataset {args.dataset!r}; choose from {', '.join(layouts.DATASETS)}", file=sys.stderr)
        return 2  # usage (avfusion.cli)
    report = layouts.prepare(args.dataset, args.root, args.out, check_media=not args.no_media_check)
    kept, skipped = report.get("kept"), report.get("skipped")
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(report.get("reasons", {}).items(), key=lambda x: -x[1]))
    print(f"{args.dataset} -> {args.out}: kept {kept}, skipped {skipped}{f' ({reasons})' if reasons else ''}; "
          f"each skipped file is named in {args.out / 'report.json'}")
    return 0
