"""AV-MAE pretraining step time and model FLOPs utilisation (MFU).

    .venv/bin/python benchmarks/pretrain_step.py --preset deepavfusion-tiny --batch 8 --device cpu --peak-flops 1e11
    # one H100 (bf16 dense peak 989 TFLOP/s), paper size, official per-GPU batch 64:
    python benchmarks/pretrain_step.py --preset deepavfusion-vggsound --batch 64 --device cuda --dtype bf16 \
        --compile --peak-flops 989e12

A step = zero_grad, forward (random masking at the preset's ratios, 75 % image / 80 % audio),
backward, AdamW step, on random inputs of the model's sizes. FLOPs of forward + backward are
counted once with torch.utils.flop_counter.FlopCounterMode (matmuls, convolutions, attention;
the optimizer and elementwise ops are not counted, as usual for MFU):

    MFU = flops_per_step / median step time / peak FLOP/s (--peak-flops, of the device and dtype)

Writes benchmarks/results/pretrain_step_<device>.csv (one row) unless --out is given.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

from avfusion.io import atomic_write_csv
from avfusion.models import registry
from avfusion.progress import Progress
from avfusion.tasks.efficiency import autocast_context, flops_of, machine_description, make_inputs, synchronize

COLUMNS = ["preset", "batch", "dtype", "compiled", "step_s_median", "step_s_min", "clips_per_s", "flops_per_step",
           "tflops_achieved", "peak_flops", "mfu", "peak_mem_gb", "params_m", "device", "cpu_model", "cpu_cores",
           "torch_threads", "torch", "gpu", "loadavg", "date"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="deepavfusion-tiny")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="model override, e.g. --set fusion.arch=dense")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bf16"], default="float32")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--peak-flops", type=float, required=True,
                        help="peak FLOP/s of the device for --dtype, e.g. 989e12 (H100 SXM bf16 dense)")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.peak_flops <= 0:
        raise SystemExit("error: --peak-flops must be positive")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from avfusion.models.registry import model_config
    model_dict = model_config(args.preset, args.overrides)
    model = registry.build_pretrain_model(model_dict).to(device).train()
    runner = torch.compile(model) if args.compile else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05,
                                  fused=device.type == "cuda")
    image, audio = make_inputs(model_dict, args.batch, device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, args.dtype):
            loss = runner(image, audio)["loss"]
        loss.backward()
        optimizer.step()

    def forward_backward():   # eager model: FlopCounterMode needs the eager graph
        with autocast_context(device, args.dtype):
            loss = model(image, audio)["loss"]
        loss.backward()
        model.zero_grad(set_to_none=True)

    times = []
    progress = Progress(args.warmup + args.iters, desc="pretrain step", every=1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(args.warmup + args.iters):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        seconds = time.perf_counter() - start
        if i >= args.warmup:
            times.append(seconds)
        progress.update(s=seconds)
    peak_mem_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    flops = flops_of(forward_backward)
    median = statistics.median(times)
    machine = machine_description(device)
    row = {"preset": args.preset + "".join(f" {o}" for o in args.overrides), "batch": args.batch,
           "dtype": args.dtype, "compiled": args.compile, "step_s_median": median, "step_s_min": min(times),
           "clips_per_s": args.batch / median, "flops_per_step": flops, "tflops_achieved": flops / median / 1e12,
           "peak_flops": args.peak_flops, "mfu": flops / median / args.peak_flops,
           "peak_mem_gb": "" if device.type != "cuda" else peak_mem_gb,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           "device": device.type, "cpu_model": machine["cpu_model"], "cpu_cores": machine["cpu_cores"],
           "torch_threads": machine["torch_threads"], "torch": machine["torch"], "gpu": machine["gpu"],
           "loadavg": machine["loadavg_1m"],
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    for key, value in row.items():
        if isinstance(value, float):
            row[key] = f"{value:.6g}"
    print(" ".join(f"{k}={row[k]}" for k in ("step_s_median", "clips_per_s", "flops_per_step", "tflops_achieved", "mfu")))
    out = args.out or Path(__file__).parent / "results" / f"pretrain_step_{device.type}.csv"
    atomic_write_csv(out, [row], COLUMNS)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
