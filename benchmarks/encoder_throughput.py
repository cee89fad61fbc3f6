"""Encoder inference throughput and peak memory at paper size, every fusion setting side by side.

    .venv/bin/python benchmarks/encoder_throughput.py --batch 2 --threads 1            # CPU (here)
    python benchmarks/encoder_throughput.py --device cuda --dtype bf16 --batch 64     # a GPU

ViT-B/16 branches (224x224 image -> 196 tokens, 128x192 audio -> 96 tokens), 32 fusion tokens,
preset `deepavfusion-vggsound` (fusion attn_ratio 0.25, mlp_ratio 1.0) with these overrides:

    no_fusion      fusion.layers=none                 (two plain ViT-B)
    late_fusion    dense block (exact fast) at the last layer only (Table 4 late fusion)
    late_naive     the same with the naive dense block, as the official code runs Table 5 row 1
                   ("no early fusion" = Table 4's late-fusion row, spec 8 item 4)
    token          token fusion at every layer
    dense_naive    dense interactions, n_a*n_v pairs materialised (the official code)
    dense_fast     dense interactions, exact identity of spec 9 (two cross-attentions)
    factorized     DeepAVFusion (16 fusion + 8 + 8 aggregation tokens)

All encoders are built first; timed forwards then run round-robin (one forward of each setting
per round) so that load changes on a shared machine hit every setting alike; the median per
setting is reported. Peak memory and FLOPs come from one extra forward each
(`avfusion.tasks.efficiency`: CUDA max_memory_allocated; on CPU the profiler's allocator events).
Writes benchmarks/results/encoder_throughput_<device>.csv (one row per setting + the machine).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import statistics
import sys
from pathlib import Path

import torch

from avfusion.io import atomic_write_csv
from avfusion.progress import Progress
from avfusion.tasks.efficiency import (GIB, build_for_inference, machine_description, make_inputs,
                                       measure_memory_and_flops, tensor_bytes, timed_forward)

SETTINGS = {
    "no_fusion": {"fusion": {"layers": "none"}},
    "late_fusion": {"fusion": {"arch": "dense", "layers": "last", "dense_impl": "fast"}},
    "late_naive": {"fusion": {"arch": "dense", "layers": "last", "dense_impl": "naive"}},
    "token": {"fusion": {"arch": "token"}},
    "dense_naive": {"fusion": {"arch": "dense", "dense_impl": "naive"}},
    "dense_fast": {"fusion": {"arch": "dense", "dense_impl": "fast"}},
    "factorized": {"fusion": {"arch": "factorized"}},
}
COLUMNS = ["setting", "clips_per_s", "iter_s_median", "iter_s_min", "iter_s_max", "peak_mem_gb", "act_mem_gb_per_clip",
           "params_m",
           "gflops_per_clip", "throughput_vs_factorized", "mem_vs_factorized", "cost_vs_no_fusion",
           "preset", "batch", "dtype", "compiled", "warmup", "iters", "device", "cpu_model", "cpu_cores",
           "torch_threads", "torch", "gpu", "loadavg_start", "loadavg_end", "date"]


def model_section(preset: str, setting: str) -> dict:
    overrides = {k: dict(v) for k, v in SETTINGS[setting].items()}
    if overrides["fusion"].get("layers") == "last":
        from avfusion.models.registry import model_config
        overrides["fusion"]["layers"] = model_config(preset)["depth"] - 1
    return {"preset": preset, **overrides}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="deepavfusion-vggsound")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of " + ",".join(SETTINGS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument("--iters", type=int, default=5, help="timed rounds (median reported); 0 = memory and FLOPs only")
    parser.add_argument("--dtype", choices=["float32", "bf16"], default="float32")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile each encoder")
    parser.add_argument("--out", type=Path, default=None,
                        help="CSV path (default benchmarks/results/encoder_throughput_<device>.csv)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"error: --settings: unknown {unknown}; known: {list(SETTINGS)}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_description(device)
    torch.manual_seed(0)

    encoders, inputs = {}, None
    for name in settings:
        model_dict, encoder, runner = build_for_inference(model_section(args.preset, name), device, args.compile)
        encoders[name] = (encoder, runner)
        if inputs is None:
            inputs = make_inputs(model_dict, args.batch, device)
        print(f"built {name}: {sum(p.numel() for p in encoder.parameters()) / 1e6:.1f} M parameters", flush=True)
    image, audio = inputs

    times = {name: [] for name in settings}
    progress = Progress(args.warmup + args.iters, desc="rounds", every=1)
    for round_id in range(args.warmup + args.iters):
        for name in settings:
            seconds = timed_forward(encoders[name][1], image, audio, device, args.dtype)
            if round_id >= args.warmup:
                times[name].append(seconds)
        progress.update(**{name: times[name][-1] for name in settings if times[name]})

    rows = []
    for name in settings:
        encoder, runner = encoders[name]
        stats = measure_memory_and_flops(encoder, runner, image, audio, device, args.dtype)
        weights_and_inputs = tensor_bytes(list(encoder.parameters()) + list(encoder.buffers()) + [image, audio])
        # activations: what the forward holds on top of the weights and inputs, per clip
        stats["act_mem_gb_per_clip"] = (stats["peak_mem_gb"] * GIB - weights_and_inputs) / GIB / args.batch
        row = {"setting": name, **stats}
        if times[name]:
            median = statistics.median(times[name])
            row.update(clips_per_s=args.batch / median, iter_s_median=median, iter_s_min=min(times[name]),
                       iter_s_max=max(times[name]))
        rows.append(row)
        print(f"{name}: {row.get('clips_per_s', float('nan')):.3f} clips/s, peak {stats['peak_mem_gb']:.3f} GiB, "
              f"{stats['gflops_per_clip']:.1f} GFLOP/clip", flush=True)
        encoders[name] = None
        del encoder, runner
        gc.collect()

    by_name = {row["setting"]: row for row in rows}
    end_load = machine_description(device)["loadavg_1m"]
    fact, none = by_name.get("factorized"), by_name.get("no_fusion")
    for row in rows:
        timed = "clips_per_s" in row
        row["throughput_vs_factorized"] = row["clips_per_s"] / fact["clips_per_s"] if fact and timed else ""
        row["mem_vs_factorized"] = row["peak_mem_gb"] / fact["peak_mem_gb"] if fact else ""
        row["cost_vs_no_fusion"] = none["clips_per_s"] / row["clips_per_s"] if none and timed else ""
    for row in rows:
        row.update(preset=args.preset, batch=args.batch, dtype=args.dtype, compiled=args.compile,
                   warmup=args.warmup, iters=args.iters, device=device.type, cpu_model=machine["cpu_model"],
                   cpu_cores=machine["cpu_cores"], torch_threads=machine["torch_threads"], torch=machine["torch"],
                   gpu=machine["gpu"], loadavg_start=machine["loadavg_1m"], loadavg_end=end_load,
                   date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        for key, value in row.items():
            if isinstance(value, float):
                row[key] = f"{value:.4g}"
    out = args.out or Path(__file__).parent / "results" / f"encoder_throughput_{device.type}.csv"
    atomic_write_csv(out, rows, COLUMNS)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
