"""metrics.json: one flat dict of metrics plus where they came from.

    write_metrics(out_dir, {"acc_all": 53.1}, cfg=cfg, scale="tiny", seed=0, manifest=path, wall_s=12.3)
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

from .config import config_hash, to_dict
from .io import atomic_write_json


def git_commit(repo_dir: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def process_start_time() -> float | None:
    """This process's start (Unix time) from /proc (Linux), or None where /proc is missing."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22, starttime, after "pid (comm) "
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def process_usage() -> dict:
    """CPU seconds of the process that writes metrics.json, from its start (imports included) to now:
    getrusage of the process itself plus its waited-for children (user and sys), and its wall seconds.
    A DAG's CPU is the sum of its jobs' `cpu_s` (each Snakemake job is one such process with the
    debug executor; with local / slurm it is the rank-0 task process, not the launcher waiting for it)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime
    start = process_start_time()
    return {"cpu_s": round(user + system, 3), "cpu_user_s": round(user, 3), "cpu_sys_s": round(system, 3),
            "cpu_children_s": round(children.ru_utime + children.ru_stime, 3),
            "process_wall_s": round(time.time() - start, 3) if start is not None else None,
            "max_rss_mb": round(own.ru_maxrss / 1024, 1)}


def provenance(cfg: Any = None, scale: str | None = None, seed: int | None = None,
               manifest: str | Path | None = None, wall_s: float | None = None, **extra) -> dict:
    out = {
        # the module that ran the job (its Config class's): a table cell's run names its code
        "task": type(cfg).__module__ if dataclasses.is_dataclass(cfg) else None,
        "config_hash": config_hash(cfg) if cfg is not None else None,
        "git_commit": git_commit(),
        "seed": seed,
        "scale": scale,
        "manifest_hash": file_hash(manifest) if manifest else None,
        "wall_s": wall_s,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # CPU-s and wall-s of the whole job process until now (start-up and imports included)
        "usage": process_usage(),
    }
    from . import distributed as dist_utils

    world = dist_utils.get_world_size()
    out["world_size"] = world  # ranks that trained / evaluated (avfusion.launch: one per GPU)
    optim = getattr(cfg, "optim", None)
    if optim is not None and hasattr(optim, "batch_size") and hasattr(optim, "accum_iter"):
        if hasattr(optim, "for_world"):
            optim = optim.for_world(world)
        out["effective_batch"] = optim.batch_size * optim.accum_iter * world  # per rank x accumulation x ranks
        out["accum_iter"] = optim.accum_iter
        if hasattr(optim, "absolute_lr"):
            out["lr"] = optim.absolute_lr(world)
    out.update(extra)
    return out


def write_metrics(out_dir: str | Path, metrics: dict, cfg: Any = None, **prov) -> Path:
    """Write `out_dir/metrics.json` = {"metrics": flat dict, "provenance": {...}, "config": {...}}."""
    flat = {}
    for key, value in metrics.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metric {key!r} is {value}: refusing to write a non-finite result")
        flat[key] = value
    payload = {"metrics": flat, "provenance": provenance(cfg, **prov),
               "config": to_dict(cfg) if cfg is not None else None}
    return atomic_write_json(Path(out_dir) / "metrics.json", payload)
