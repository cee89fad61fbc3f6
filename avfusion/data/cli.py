"""`avfusion data ...`: build manifests.

    avfusion data make-tuxav --scale tiny --out data/tuxav-tiny [--seed 0]   # the embedded benchmark
    avfusion data prepare vggsound --root /data/vggsound --out data/vggsound  # an official layout
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    make = sub.add_parser("make-tuxav", help="generate the embedded mini benchmark from the Tux Paint stamps")
    make.add_argument("--scale", choices=["smoke", "tiny"], default="tiny")
    make.add_argument("--out", type=Path, required=True, help="output folder (manifest.csv, media, pairs.csv)")
    make.add_argument("--seed", type=int, default=0)
    prep = sub.add_parser("prepare", help="parse a dataset in its official layout into a manifest")
    prep.add_argument("dataset", help="dataset name, e.g. vggsound, audioset, avsbench_s4, flickr_soundnet")
    prep.add_argument("--root", type=Path, required=True, help="the dataset's root folder")
    prep.add_argument("--out", type=Path, required=True, help="output folder for manifest.csv")
    prep.add_argument("--no-media-check", action="store_true",
                      help="trust the file tree: do not open every media file while parsing")


def main(args: argparse.Namespace) -> int:
    if args.data_command == "make-tuxav":
        from .tuxav import make_tuxav

        t0 = time.perf_counter()
        summary = make_tuxav(args.out, args.scale, args.seed)
        print(f"tuxav {args.scale} (seed {args.seed}) -> {args.out}: {summary['clips']} clips, "
              f"{len(summary['classes'])} classes, {summary['pairs']} pairs, "
              f"{time.perf_counter() - t0:.1f} s")
        return 0
    from . import layouts  # imported only for this subcommand

    if args.dataset not in layouts.DATASETS:
        raise SystemExit(f"error: unknown dataset {args.dataset!r}; choose from {', '.join(layouts.DATASETS)}")
    report = layouts.prepare(args.dataset, args.root, args.out, check_media=not args.no_media_check)
    kept, skipped = report.get("kept"), report.get("skipped")
    print(f"{args.dataset} -> {args.out}: kept {kept}, skipped {skipped} (reasons in {args.out / 'report.json'})")
    return 0
