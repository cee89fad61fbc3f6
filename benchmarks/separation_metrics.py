"""Speed of the batched BSS Eval (avfusion.metrics.bss_eval_fast) against mir_eval 0.8.2.

Workload: the VGGSound-Music evaluation size of the paper's separation task, 1201 pairs of
2 sources x 3 s x 16 kHz, cut at random offsets from the real CLIPSep mixtures in
shared/testdata (refs = target, interference; ests = CLIPSep estimate, mixture - estimate).
mir_eval is timed on a subset and extrapolated (it takes minutes for all 1201 pairs); the
subset also gives the largest disagreement between the two in dB. The two are timed in
interleaved rounds, so that a shared machine's load weighs on both alike.

    .venv/bin/python benchmarks/separation_metrics.py --threads 1 --tag this-machine
    .venv/bin/python benchmarks/separation_metrics.py --mir-eval-pairs 1201   # no extrapolation
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import threadpoolctl
import torch

from avfusion.io import atomic_write_csv
from avfusion.metrics.bss_eval_fast import bss_eval_sources_batch

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE, SECONDS = 16000, 3
FIELDS = ["tag", "machine", "cpu", "cores", "load_avg_1min", "torch", "threads", "n_pairs", "backend",
          "solver", "pairs_timed", "seconds_timed", "seconds_per_pair", "seconds_for_n_pairs",
          "extrapolated", "speedup_vs_mir_eval", "max_abs_diff_db"]


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_pairs(testdata: Path, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n_pairs, 2, 48000) refs and ests cut from the CLIPSep mixtures that have ground truth."""
    folders = sorted(p.parent for p in (testdata / "clipsep_mixtures").glob("*/*/gt.wav"))
    if not folders:
        raise FileNotFoundError(f"no clipsep_mixtures/*/*/gt.wav under {testdata}")
    clips = []
    for folder in folders:
        wav = {n: sf.read(folder / f"{n}.wav", dtype="float64")[0] for n in ("gt", "int", "mix", "pred")}
        clips.append((np.stack([wav["gt"], wav["int"]]), np.stack([wav["pred"], wav["mix"] - wav["pred"]])))
    rng = np.random.default_rng(seed)
    length = SAMPLE_RATE * SECONDS
    refs, ests = np.empty((n_pairs, 2, length)), np.empty((n_pairs, 2, length))
    for i in range(n_pairs):
        ref, est = clips[rng.integers(len(clips))]
        start = rng.integers(ref.shape[1] - length + 1)
        refs[i], ests[i] = ref[:, start:start + length], est[:, start:start + length]
    return refs, ests


def time_mir_eval(refs: np.ndarray, ests: np.ndarray) -> tuple[float, np.ndarray]:
    import mir_eval

    out = np.empty((len(refs), 3, refs.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        start = time.perf_counter()
        for b in range(len(refs)):
            out[b] = mir_eval.separation.bss_eval_sources(refs[b], ests[b], compute_permutation=False)[:3]
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1201)
    parser.add_argument("--mir-eval-pairs", type=int, default=40, help="subset timed with mir_eval")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS / solver threads")
    parser.add_argument("--solver", default="auto", choices=["auto", "c", "torch"])
    parser.add_argument("--testdata", type=Path, default=Path(os.environ.get(
        "AVFUSION_TESTDATA", REPO.parent / "shared" / "testdata")))
    parser.add_argument("--tag", default=platform.node())
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "separation_metrics.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    refs, ests = make_pairs(args.testdata, args.pairs)
    print(f"{args.pairs} pairs of {refs.shape[1:]}; warming up (builds the C kernel once)", flush=True)
    bss_eval_sources_batch(refs[:2], ests[:2], solver=args.solver)

    # interleaved rounds, so that both are timed under the same machine load
    n_ref = min(args.mir_eval_pairs, args.pairs)
    fast_edges = np.linspace(0, args.pairs, args.rounds + 1).astype(int)
    ref_edges = np.linspace(0, n_ref, args.rounds + 1).astype(int)
    fast, reference = [], []
    fast_seconds = mir_seconds = 0.0
    for r in range(args.rounds):
        start = time.perf_counter()
        fast.append(np.stack(bss_eval_sources_batch(refs[fast_edges[r]:fast_edges[r + 1]],
                                                    ests[fast_edges[r]:fast_edges[r + 1]], solver=args.solver), 1))
        fast_seconds += time.perf_counter() - start
        with threadpoolctl.threadpool_limits(args.threads):  # numpy's BLAS gets the same thread count
            seconds, scores = time_mir_eval(refs[ref_edges[r]:ref_edges[r + 1]], ests[ref_edges[r]:ref_edges[r + 1]])
        mir_seconds += seconds
        reference.append(scores)
        print(f"round {r + 1}/{args.rounds}: fast {fast_seconds:.1f} s, mir_eval {mir_seconds:.1f} s", flush=True)
    fast, reference = np.concatenate(fast), np.concatenate(reference)    # (N, 3, 2), (n_ref, 3, 2)
    mir_total = mir_seconds / n_ref * args.pairs
    max_diff = float(np.abs(fast[:n_ref] - reference).max())
    print(f"fast: {fast_seconds:.2f} s for {args.pairs} pairs; mir_eval: {mir_seconds:.2f} s for {n_ref} pairs "
          f"-> {mir_total:.1f} s for {args.pairs}; speedup {mir_total / fast_seconds:.1f}x; "
          f"max |diff| {max_diff:.2e} dB", flush=True)

    common = dict(tag=args.tag, machine=f"{platform.node()} {platform.system()} {platform.machine()}",
                  cpu=cpu_model(), cores=os.cpu_count(), load_avg_1min=f"{os.getloadavg()[0]:.2f}",
                  torch=torch.__version__, threads=args.threads, n_pairs=args.pairs, max_abs_diff_db=f"{max_diff:.3e}")
    rows = [dict(common, backend="bss_eval_fast", solver=args.solver, pairs_timed=args.pairs,
                 seconds_timed=f"{fast_seconds:.3f}", seconds_per_pair=f"{fast_seconds / args.pairs:.5f}",
                 seconds_for_n_pairs=f"{fast_seconds:.2f}", extrapolated=False,
                 speedup_vs_mir_eval=f"{mir_total / fast_seconds:.1f}"),
            dict(common, backend="mir_eval", solver="lu", pairs_timed=n_ref, seconds_timed=f"{mir_seconds:.3f}",
                 seconds_per_pair=f"{mir_seconds / n_ref:.5f}", seconds_for_n_pairs=f"{mir_total:.1f}",
                 extrapolated=n_ref < args.pairs, speedup_vs_mir_eval="1.0")]
    existing = []
    if args.out.exists():
        import csv

        with open(args.out, newline="") as fh:
            existing = [r for r in csv.DictReader(fh) if r.get("tag") != args.tag or r.get("threads") != str(args.threads)]
    atomic_write_csv(args.out, existing + rows, FIELDS)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
