"""GPU-hours per table at paper scale: a compute estimate from measured FLOPs and the paper's budgets.

    .venv/bin/python benchmarks/gpu_hours.py [--tflops 100]

No training time is reported by the paper and no GPU was available here, so this counts work, not
seconds measured on a card: FLOPs per sample (measured at paper size with torch's FlopCounterMode on
CPU: AV-MAE pretraining step forward+backward = 221.0 GFLOP per batch of 2, benchmarks/pretrain_step.py
on 2026-12-01; encoder forward on a full clip = 58.1 GFLOP, benchmarks/README.md "encoder throughput")
x samples (train-set size x epochs of workflow/config/scales/paper.yaml) / a sustained rate
(--tflops, default 100 TFLOP/s: about a third of an A100's bf16 peak, a tenth of an H100's).
Training a fine-tuned encoder counts 3x its forward (forward + backward); the linear probe caches
frozen features (one forward per clip); separation runs the encoder on both sources of a mixture.
Decoders, heads and evaluation are left out (small next to the encoder). It is a floor: a job whose
video decoding cannot keep up with the GPU takes longer.
"""
from __future__ import annotations

import argparse

PRETRAIN_GFLOP = 221.0 / 2          # per sample, fwd+bwd with 75 % / 80 % masking (measured)
FORWARD_GFLOP = 58.1                # encoder forward, full 224x224 frame + 128x192 log-mel (measured)
UNIMODAL_SHARE = 0.5                # an image- or audio-only MAE: about half of the AV-MAE's work
# train-set sizes: VGGSound 144k (paper), metadata shipped in avfusion/data/layouts/metadata/
TRAIN = {"vggsound": 144_000, "vggsound_music": 38_704, "vggsound_instruments": 33_934,
         "music_duet": 48_348, "avsbench_s4": 17_260, "avsbench_avss": 60_000,   # AVSS: rough (see README)
         "flickr_soundnet": 4_750}
EPOCHS = {"pretrain": 200, "linprobe": 60, "finetune": 100, "separation": 300, "segmentation": 50,
          "localization": 20}


def job_gflop(task: str, dataset: str) -> float:
    n = TRAIN[dataset]
    if task == "pretrain":
        return n * EPOCHS[task] * PRETRAIN_GFLOP
    if task == "linprobe":
        return n * FORWARD_GFLOP                       # cached features: one forward per clip
    per_sample = 3 * FORWARD_GFLOP * (2 if task == "separation" else 1)
    return n * EPOCHS[task] * per_sample


# runs per table (variants x tasks); pretraining counted once per variant the table needs
TABLES = {
    "Table 1 (separation, 3 datasets)": {"pretrain": ["deepavfusion"],
        "jobs": [("separation", d) for d in ("music_duet", "vggsound_instruments", "vggsound_music")]},
    "Table 2 (segmentation S4, AVSS)": {"pretrain": ["deepavfusion"],
        "jobs": [("segmentation", "avsbench_s4"), ("segmentation", "avsbench_avss")]},
    "Table 3 (LP + FT, 2 datasets, 5 rows)": {"pretrain": ["deepavfusion", "cav_mae", "late_fusion", "mae_image", "mae_audio"],
        "jobs": [(t, d) for t in ("linprobe", "finetune") for d in ("vggsound", "vggsound_music")], "rows": 5},
    "Table 4 (6 variants)": {"pretrain": ["x"] * 6,
        "jobs": [("linprobe", "vggsound"), ("separation", "vggsound_music"), ("segmentation", "avsbench_avss")], "rows": 6},
    "Table 5 (3 variants)": {"pretrain": ["x"] * 3,
        "jobs": [("linprobe", "vggsound"), ("separation", "vggsound_music"), ("segmentation", "avsbench_avss")], "rows": 3},
    "Table 6 (11 variants)": {"pretrain": ["x"] * 11,
        "jobs": [("linprobe", "vggsound"), ("separation", "vggsound_music"), ("segmentation", "avsbench_avss")], "rows": 11},
    "Table 7 (2 variants)": {"pretrain": ["x"] * 2,
        "jobs": [("linprobe", "vggsound"), ("finetune", "vggsound"), ("separation", "vggsound_music"),
                 ("segmentation", "avsbench_avss"), ("localization", "flickr_soundnet")], "rows": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflops", type=float, default=100.0, help="sustained TFLOP/s per GPU")
    args = parser.parse_args()
    hours = lambda gflop: gflop * 1e9 / (args.tflops * 1e12) / 3600  # noqa: E731
    one_pretrain = hours(job_gflop("pretrain", "vggsound"))
    print(f"one AV-MAE pretraining on VGGSound (200 epochs): {one_pretrain:.1f} GPU-h at {args.tflops:g} TFLOP/s\n")
    print("| table | pretraining GPU-h | downstream GPU-h | total | from the released checkpoint (ours row only) |")
    print("|---|---|---|---|---|")
    for name, spec in TABLES.items():
        pre = sum(one_pretrain * (UNIMODAL_SHARE if v.startswith("mae_") else 1) for v in spec["pretrain"])
        per_row = sum(hours(job_gflop(t, d)) for t, d in spec["jobs"])
        down = per_row * spec.get("rows", 1)
        print(f"| {name} | {pre:.0f} | {down:.0f} | {pre + down:.0f} | {per_row:.0f} |")
    jobs = {(t, d): round(hours(job_gflop(t, d)), 2) for t, d in
            [("finetune", "vggsound"), ("linprobe", "vggsound"), ("separation", "vggsound_music"),
             ("segmentation", "avsbench_avss"), ("localization", "flickr_soundnet")]}
    print(f"\nper job (GPU-h): {jobs}")


if __name__ == "__main__":
    main()
