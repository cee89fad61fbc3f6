"""What every job shares: the CLI arguments and the config -> run -> metrics.json contract.

Every task module defines a dataclass `Config` and `run(cfg, out_dir) -> dict` (flat metrics);
its CLI is then just:

    def add_arguments(parser): add_job_arguments(parser)
    def main(args): return job_main(args, Config, run)

    avfusion <task> --config FILE [--config FILE2] [--set key=value ...] --out DIR [--fresh]

The run folder is held by one process at a time (`avfusion.runlock`); a folder holding a
checkpoint is resumed only with the config it was made with (`avfusion.engine`), `--fresh` moves
the old run aside to `<out>.replaced-<time>` and starts again. A job that fails before writing
anything leaves no empty run folder behind.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError, from_dict, load_yaml, merge, parse_overrides


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config; several are merged left to right")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one key, e.g. --set optim.epochs=2")
    parser.add_argument("--out", required=True, type=Path, help="run folder (resumes if it holds a checkpoint)")
    parser.add_argument("--fresh", action="store_true",
                        help="start afresh: move an existing run in --out aside to <out>.replaced-<time>")


def build_job_config(config_cls: type, raw: dict, recipes: dict | None = None) -> Any:
    """Build `config_cls` from one merged dict. With `recipes` ({name: nested dict}), the config's
    `recipe` key (else the class default) picks a layer of defaults that sits under `raw`: a recipe
    is config data (e.g. the paper's vs the code's hyperparameters)."""
    if not recipes:
        return from_dict(config_cls, raw)
    name = raw.get("recipe", getattr(config_cls(), "recipe", None))
    if name not in recipes:
        raise ConfigError(f"config key 'recipe': got {name!r}, expected one of {sorted(recipes)}")
    return from_dict(config_cls, merge(recipes[name], raw))


def load_job_config(config_cls: type, files: list, overrides: list, recipes: dict | None = None) -> Any:
    """Build `config_cls` from files + overrides (+ the recipe layer, see build_job_config)."""
    raw: dict = {}
    for path in files or []:
        raw = merge(raw, load_yaml(path))
    return build_job_config(config_cls, merge(raw, parse_overrides(overrides)), recipes)


def check_job_config(command: str, data: dict) -> Any:
    """Validate the config dict of `avfusion <command>` as the job will read it (written as YAML,
    read back, built into the command's own Config class); raises ConfigError naming the key.
    The Snakefile calls this for every job it plans, so a bad `tasks.*` key fails at parse time."""
    import importlib

    import yaml

    from ..cli import COMMANDS
    from ..config import yaml_load

    module = importlib.import_module(COMMANDS[command][0])
    return build_job_config(module.Config, yaml_load(yaml.safe_dump(data)), getattr(module, "RECIPES", None))


def move_run_aside(out_dir: Path, keep: tuple[str, ...] = ()) -> Path | None:
    """Move the contents of run folder `out_dir` (but `keep`) into `<out_dir>.replaced-<time>`."""
    entries = [p for p in out_dir.iterdir() if p.name not in keep] if out_dir.is_dir() else []
    if not entries:
        return None
    stale = out_dir.with_name(f"{out_dir.name}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
    stale.mkdir()
    for path in entries:
        shutil.move(str(path), str(stale / path.name))
    print(f"--fresh: the old run in {out_dir} moved to {stale}")
    return stale


def job_main(args: argparse.Namespace, config_cls: type, run: Callable[[Any, Path], dict],
             recipes: dict | None = None) -> int:
    """Config -> lock the run folder -> run -> metrics line. Errors propagate to `avfusion.cli`,
    which prints them as one line with an exit code."""
    from ..runlock import LOCK_NAME, RunLock

    cfg = load_job_config(config_cls, args.config, args.overrides, recipes)
    out = Path(args.out)
    created = not out.exists()
    lock = RunLock(out) if os.environ.get("RANK", "0") == "0" else None  # DDP: rank 0 owns the folder
    if lock is not None:
        lock.acquire()
    else:
        out.mkdir(parents=True, exist_ok=True)
    try:
        if getattr(args, "fresh", False):
            move_run_aside(out, keep=(LOCK_NAME,))
        metrics = run(cfg, out)
    finally:
        if lock is not None:
            lock.release()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a job that failed at start leaves no empty run folder
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return 0
