"""metrics.json: one flat dict of metrics plus where they came from.

    write_metrics(out_dir, {"acc_all": 53.1}, cfg=cfg, scale="tiny", seed=0, manifest=path, wall_s=12.3)
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
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
