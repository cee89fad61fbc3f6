"""The learning tests over several seeds: the evidence behind every margin they assert.

    python benchmarks/learning_margins.py --seeds 0 1 2 3            # ~30 CPU-min on 2 cores
    python benchmarks/learning_margins.py --seeds 0 1 -k segmentation  # one test's seeds

Runs `pytest -m learning --learning-seed S` once per seed (this `-m` replaces the default `not evidence`, so the
minutes-long `evidence` tests run too), with AVFUSION_MARGIN_LOG pointing at a CSV to
which every `margin_check(name, ours, floor, margin)` appends (tests/conftest.py); failures are recorded,
not fatal. Writes benchmarks/learning_margins.csv (one row per test, check and seed) and prints a Markdown
table per check: n seeds, min / mean / std of the gap (ours - floor) and half the smallest gap. The rule
for a margin (benchmarks/README.md): at most half the smallest gap over at least 4 seeds, so a change of
host kernels (which acts like a change of seed) leaves room; a check whose smallest gap is not positive
asserts nothing it cannot keep and says so in its docstring.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_seeds(seeds: list[int], select: str | None, log: Path) -> dict[int, int]:
    """pytest's exit code per seed; measurements appended to `log`."""
    codes = {}
    for seed in seeds:
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "learning", f"--learning-seed={seed}",
               "-p", "no:cacheprovider", *(["-k", select] if select else [])]
        start = time.time()
        print(f"{time.strftime('%H:%M:%S')} seed {seed}: {' '.join(cmd[1:])}", flush=True)
        codes[seed] = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, AVFUSION_MARGIN_LOG=str(log))).returncode
        print(f"{time.strftime('%H:%M:%S')} seed {seed}: exit {codes[seed]} after {time.time() - start:.0f} s",
              flush=True)
    return codes


def summarize(rows: list[dict]) -> str:
    """Markdown: one line per (test, check) with the gap's spread over seeds."""
    groups = defaultdict(list)
    for row in rows:
        groups[(row["test"].split("::")[-1], row["check"])].append(row)
    lines = ["| test | check | n | min gap | mean gap | std | min gap / 2 |",
             "|---|---|---|---|---|---|---|"]
    for (test, check), group in sorted(groups.items()):
        gaps = [float(r["gap"]) for r in group]
        std = statistics.stdev(gaps) if len(gaps) > 1 else float("nan")
        lines.append(f"| {test} | {check} | {len(gaps)} | {min(gaps):.3f} | {statistics.mean(gaps):.3f} | "
                     f"{std:.3f} | {min(gaps) / 2:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("-k", dest="select", help="pytest -k expression (a subset of the learning tests)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "learning_margins.csv",
                        help="the CSV to write (rows of earlier runs for other tests/seeds are kept)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "margins.csv"
        codes = run_seeds(args.seeds, args.select, log)
        new = list(csv.DictReader(log.open())) if log.exists() else []
    keep = []
    if args.out.exists():  # keep the rows this run did not remeasure
        measured = {(r["test"], r["check"], r["seed"]) for r in new}
        keep = [r for r in csv.DictReader(args.out.open()) if (r["test"], r["check"], r["seed"]) not in measured]
    rows = sorted(keep + new, key=lambda r: (r["test"], r["check"], int(r["seed"])))
    if rows:
        tmp_out = args.out.with_suffix(".csv.tmp")
        with tmp_out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        tmp_out.replace(args.out)
    print(summarize(rows))
    print("pytest exit codes per seed:", codes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
