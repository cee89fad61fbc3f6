"""Encoder inference throughput and peak memory (Table 5's speed and memory columns).

    avfusion efficiency --config avfusion/tasks/examples/efficiency.yaml --out runs/efficiency/x
    avfusion efficiency --config avfusion/tasks/examples/efficiency.yaml --set model.preset=deepavfusion-vggsound \
        --set device=cuda --set dtype=bf16 --set compile=true --set threads=0 --out runs/efficiency/vggsound

(the DAG writes each job's config from workflow/config: tasks.efficiency + the variant's model section).

- model: `{preset: NAME, ...overrides}` -> `avfusion.models.registry.build_encoder`, random init
  (weights do not change the cost), eval mode, full token grids (no masking), `torch.inference_mode`.
- Speed: `warmup` untimed forwards, then `iters` timed ones (CUDA synchronised);
  clips_per_s = batch_size / median iteration time. Per-iteration times go to `iters.csv`.
- Peak memory (one extra, untimed forward), bytes held by tensors, weights and inputs included:
  - CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`.
  - CPU: the same quantity, rebuilt from the allocator's own events: `torch.profiler` with
    `profile_memory=True` records every CPU allocation and free of the forward ("[memory]" events,
    +bytes / -bytes); their running sum in time order is the memory added on top of what was live
    before the forward; its maximum plus the weights and inputs (the bytes live before) is the peak.
    This is exact for tensors made by torch's CPU allocator (all tensors of a forward) and does not
    depend on the process's RSS, the malloc cache or other processes; it does not see scratch memory
    that oneDNN/BLAS allocate outside torch's allocator.
- dtype float32 | bf16 (autocast to bfloat16; meant for GPUs), optional `torch.compile`.
- metrics.json: clips_per_s, peak_mem_gb (2^30 bytes), params_m, gflops_per_clip (FlopCounterMode,
  matmul/attention FLOPs of one forward), iter_s_median/min/max, compile_s and the settings;
  `provenance.machine` describes the machine (CPU model, cores, torch threads and version, load, GPU).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from ..config import ConfigError
from ..progress import CSVLog, Progress
from .common import JobConfig, add_job_arguments, job_main, start_job, write_job_metrics

GIB = float(1 << 30)


@dataclass
class Config(JobConfig):
    """`model:` required; `init` is unused (random weights: they do not change the cost)."""
    batch_size: int = 2
    warmup: int = 2               # untimed forwards (the first also compiles with `compile`)
    iters: int = 5                # timed forwards; the median is reported
    dtype: Literal["float32", "bf16"] = "float32"
    compile: bool = False         # torch.compile(encoder)
    threads: int = 0              # torch.set_num_threads on CPU; 0 = torch's default
    count_flops: bool = True      # one extra forward under FlopCounterMode

    def validate(self) -> None:
        for key in ("batch_size", "iters"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key '{key}': must be >= 1, got {getattr(self, key)}")
        if self.warmup < 0 or self.threads < 0:
            raise ConfigError(f"config keys 'warmup'/'threads': must be >= 0, got {self.warmup}/{self.threads}")
        super().validate()


# ---------------------------------------------------------------------------------------------
# building blocks (also used by benchmarks/encoder_throughput.py)


def input_shapes(model_dict: dict) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Resolved model dict -> (image (3, H, W), audio (1, F, T)) input shapes."""
    try:
        image = tuple(int(s) for s in model_dict["image"]["input_size"])
        audio = tuple(int(s) for s in model_dict["audio"]["input_size"])
    except (KeyError, TypeError):
        raise ValueError(f"model family {model_dict.get('family')!r}: the model dict has no "
                         "'image.input_size' / 'audio.input_size' to size the inputs") from None
    return (3, *image), (1, *audio)


def make_inputs(model_dict: dict, batch_size: int, device: torch.device, seed: int = 0):
    """Random image (B, 3, H, W) and audio (B, 1, F, T) of the model's input sizes."""
    image_shape, audio_shape = input_shapes(model_dict)
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(batch_size, *image_shape, generator=gen)     # (B, 3, H, W)
    audio = torch.randn(batch_size, *audio_shape, generator=gen)     # (B, 1, F, T)
    return image.to(device), audio.to(device)


def autocast_context(device: torch.device, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if dtype != "float32":
        raise ValueError(f"dtype: got {dtype!r}, expected 'float32' or 'bf16'")
    return nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def cpu_peak_bytes_of(fn: Callable[[], Any]) -> int:
    """Peak bytes added by `fn()` on top of what was live before, from the CPU allocator's events
    recorded by torch.profiler (running sum of +alloc/-free bytes in time order, maximum)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cpu = torch._C._autograd.DeviceType.CPU
    events = [(e.start_ns(), i, e.nbytes()) for i, e in enumerate(prof.profiler.kineto_results.events())
              if e.name() == "[memory]" and e.device_type() == cpu]
    current = peak = 0
    for _, _, nbytes in sorted(events):
        current += nbytes
        peak = max(peak, current)
    return peak


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device, live_before: int) -> int:
    """Peak bytes held by tensors while `fn()` runs, `live_before` (weights + inputs) included on CPU;
    on CUDA, max_memory_allocated counts what is allocated already (the same weights and inputs)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    return live_before + cpu_peak_bytes_of(fn)


def _cpu_flash_sdpa_formulas() -> dict:
    """FlopCounterMode knows the CUDA SDPA kernels but not the CPU flash kernel: same formulas."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


def flops_of(fn: Callable[[], Any]) -> int:
    """FLOPs of `fn()` (matmuls, convolutions, attention on CPU and CUDA) counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_flash_sdpa_formulas())
    with counter:
        fn()
    return int(counter.get_total_flops())


def machine_description(device: torch.device) -> dict:
    """CPU model, cores, threads, torch version, load and (on CUDA) the GPU name."""
    cpu_model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu_model = names[0] if names else cpu_model
    except OSError:
        pass
    out = {"device": device.type, "cpu_model": cpu_model, "cpu_cores": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
           "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else ""}
    return out


def timed_forward(encoder, image, audio, device: torch.device, dtype: str) -> float:
    """One synchronised inference forward; returns seconds."""
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode(), autocast_context(device, dtype):
        encoder(image, audio)
    synchronize(device)
    return time.perf_counter() - start


def build_for_inference(model_section: dict, device: torch.device, compile: bool = False):
    """-> (resolved model dict, eager encoder (eval, on device), callable encoder (compiled or eager))."""
    from ..models import registry

    model_dict = registry.resolve(model_section)
    encoder = registry.build_encoder(model_dict).eval().requires_grad_(False).to(device)
    runner = torch.compile(encoder) if compile else encoder
    return model_dict, encoder, runner


def measure_memory_and_flops(encoder, runner, image, audio, device: torch.device, dtype: str,
                             count_flops: bool = True) -> dict:
    """peak_mem_gb of one forward (see module docstring), params_m and gflops_per_clip."""
    def forward():
        with torch.inference_mode(), autocast_context(device, dtype):
            runner(image, audio)

    live = tensor_bytes(list(encoder.parameters()) + list(encoder.buffers()) + [image, audio])
    peak = peak_memory_bytes(forward, device, live)
    out = {"peak_mem_gb": peak / GIB, "params_m": sum(p.numel() for p in encoder.parameters()) / 1e6}
    if count_flops:
        def eager_forward():   # FlopCounterMode: eager graph, no_grad (its module tracker fails under inference_mode)
            with torch.no_grad(), autocast_context(device, dtype):
                encoder(image, audio)
        out["gflops_per_clip"] = flops_of(eager_forward) / 1e9 / image.shape[0]
    return out


# ---------------------------------------------------------------------------------------------
# the job


def run(cfg: Config, out_dir: Path) -> dict:
    cfg.validate()
    wall_start = time.perf_counter()
    device = start_job(cfg)
    if cfg.threads and device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    model_dict, encoder, runner = build_for_inference(cfg.model, device, cfg.compile)
    image, audio = make_inputs(model_dict, cfg.batch_size, device, cfg.seed)

    log_path = out_dir / "iters.csv"
    if log_path.exists():
        log_path.unlink()   # a rerun measures afresh; metrics.json is written last
    log = CSVLog(log_path, ["phase", "iter", "seconds", "clips_per_s"])
    progress = Progress(cfg.warmup + cfg.iters, desc="efficiency", every=1)
    times = []
    compile_s = 0.0
    for i in range(cfg.warmup + cfg.iters):
        seconds = timed_forward(runner, image, audio, device, cfg.dtype)
        phase = "warmup" if i < cfg.warmup else "timed"
        if i == 0 and cfg.compile:
            compile_s = seconds
        if phase == "timed":
            times.append(seconds)
        log.write(phase=phase, iter=i, seconds=f"{seconds:.6f}", clips_per_s=f"{cfg.batch_size / seconds:.4f}")
        progress.update(phase=phase, s=seconds)
    log.close()
    median = statistics.median(times)

    metrics = {"clips_per_s": cfg.batch_size / median, "iter_s_median": median,
               "iter_s_min": min(times), "iter_s_max": max(times), "compile_s": compile_s}
    metrics.update(measure_memory_and_flops(encoder, runner, image, audio, device, cfg.dtype, cfg.count_flops))
    metrics.update(batch_size=cfg.batch_size, warmup=cfg.warmup, iters=cfg.iters, dtype=cfg.dtype,
                   compiled=cfg.compile, n_image_tokens=int(encoder.image_grid[0] * encoder.image_grid[1]),
                   n_audio_tokens=int(encoder.audio_grid[0] * encoder.audio_grid[1]),
                   model_family=model_dict["family"])
    return write_job_metrics(out_dir, cfg, metrics, wall_start, machine=machine_description(device))


add_arguments = add_job_arguments


def main(args) -> int:
    return job_main(args, Config, run)
