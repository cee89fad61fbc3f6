"""What separation needs on the tiny benchmark: the DAG's own separation job, longer, on four kinds of frame.

    python benchmarks/separation_budget.py --dag . --frames class --steps 1152   # ~15 CPU-min, after `make tiny`
    python benchmarks/separation_budget.py --dag . --frames scene solo --steps 1152 --seed 0

Each run is `avfusion separation` with the job config the DAG wrote for DeepAVFusion at that seed
(`results/runs/tiny/separation/deepavfusion/seed{S}/job_config.yaml`: its AV-MAE checkpoint, model, decoder and
data) with only the keys below changed, so a result says what the DAG's job would reach with that budget:
- `--frames scene`: the DAG's tuxav (scenes of the sounding object and 1-2 silent ones);
  `solo`: the same clips drawn without the silent objects (`make-tuxav --no-distractors`, generated into
  `--work` once); `solo1`: the same, with one photo (and recording) per class (`--stamps-per-class 1`);
  `class`: every frame replaced by its class's flat colour
  (`avfusion.data.tuxav.class_colour_frames`): a frame that names the sounding class for sure.
- `power_weighted_bce` at peak lr `--lr` (the engine's cosine schedule over the run, no warmup), batches of
  16 mixtures with both sources, `--steps` steps (96 per epoch).
Writes one row per run to `--out` (CSV, appended: frames, seed, steps, sdr, sdr_mix, sdr - sdr_mix, sir,
the last epoch's mean training loss, the job's CPU-s) and the run folders under `--work`. A loss that stays at
ln 2 = 0.693 is the constant 0.5 mask: the frame did not tell the decoder which source is its own.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = ["date", "frames", "seed", "steps", "lr", "sdr", "sdr_mix", "sdr_minus_mix", "sir", "last_epoch_loss",
           "cpu_s", "run"]
STEPS_PER_EPOCH = 96  # 1 536 training clips / 16 mixtures
MADE_FRAMES = {"class": "class_frames", "solo": "tuxav_solo", "solo1": "tuxav_solo_1stamp"}  # kind -> folder in --work


def manifest_for(frames: str, dag: Path, work: Path) -> Path:
    """The tuxav manifest folder of a kind of frame (the DAG's for `scene`; the others made once under `work`)."""
    tuxav = dag / "data" / "tiny" / "tuxav"
    if frames == "scene":
        return tuxav
    from avfusion.data.tuxav import class_colour_frames, make_tuxav

    out = work / MADE_FRAMES[frames]
    if (out / "manifest.csv").is_file():  # written last: the folder is complete
        return out
    if frames == "class":
        return class_colour_frames(tuxav, out)
    made = json.loads((tuxav / "tuxav.json").read_text())  # the DAG's benchmark, drawn again without distractors
    make_tuxav(out, made["scale"], made["seed"], distractors=False, background=made["background"],
               background_contrast=made["background_contrast"],
               stamps_per_class=1 if frames == "solo1" else made["stamps_per_class"])
    return out


def run_one(dag: Path, frames: str, seed: int, steps: int, lr: float, work: Path) -> dict:
    """One separation job; returns its CSV row."""
    if steps % STEPS_PER_EPOCH:
        raise SystemExit(f"--steps {steps}: must be a multiple of {STEPS_PER_EPOCH} (one epoch of 16 mixtures)")
    config = dag / "results" / "runs" / "tiny" / "separation" / "deepavfusion" / f"seed{seed}" / "job_config.yaml"
    if not config.is_file():
        raise SystemExit(f"{config}: not found; run `make tiny` in {dag} first (this reads the DAG's job configs)")
    out = work / f"{frames}_seed{seed}_steps{steps}_lr{lr:g}"
    checkpoint = dag / "results" / "runs" / "tiny" / "pretrain" / "deepavfusion" / f"seed{seed}"
    sets = [f"data.manifest={manifest_for(frames, dag, work)}", f"init.checkpoint={checkpoint}",
            "loss=power_weighted_bce", f"optim.lr={lr}", "optim.batch_size=16",
            f"optim.epochs={steps // STEPS_PER_EPOCH}", f"optim.max_steps_per_epoch={STEPS_PER_EPOCH}", "n_examples=0"]
    cmd = [sys.executable, "-m", "avfusion.cli", "separation", "--config", str(config), "--out", str(out)]
    for kv in sets:
        cmd += ["--set", kv]
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {frames} seed {seed}: {steps} steps -> {out}", flush=True)
    subprocess.run(cmd, check=True, cwd=dag, env=dict(os.environ, OMP_NUM_THREADS="1"))
    result = json.loads((out / "metrics.json").read_text())
    m = result["metrics"]
    with open(out / "epochs.csv", newline="") as fh:
        last_loss = float(list(csv.DictReader(fh))[-1]["loss"])
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "frames": frames, "seed": seed, "steps": m["steps"], "lr": lr,
            "sdr": round(m["sdr"], 3), "sdr_mix": round(m["sdr_mix"], 3),
            "sdr_minus_mix": round(m["sdr"] - m["sdr_mix"], 3),
            "sir": round(m["sir"], 3), "last_epoch_loss": round(last_loss, 4),
            "cpu_s": round(result["provenance"]["usage"]["cpu_s"]), "run": str(out)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dag", type=Path, default=Path("."), help="folder where `make tiny` ran")
    parser.add_argument("--frames", nargs="+", choices=["scene", *MADE_FRAMES], default=["class"])
    parser.add_argument("--seed", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=1152)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--work", type=Path, default=Path("runs/separation_budget"))
    parser.add_argument("--out", type=Path, default=Path("separation_budget.csv"))
    args = parser.parse_args(argv)
    dag, work = args.dag.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    for frames in args.frames:
        for seed in args.seed:
            row = run_one(dag, frames, seed, args.steps, args.lr, work)
            new = not args.out.is_file()
            with open(args.out, "a", newline="") as fh:
                writer = csv.DictWriter(fh, COLUMNS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            print(", ".join(f"{k} {row[k]}" for k in COLUMNS[1:-1]), flush=True)


if __name__ == "__main__":
    main()
