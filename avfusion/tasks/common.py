"""What every job shares: the CLI arguments and the config -> run -> metrics.json contract.

Every task module defines a dataclass `Config` and `run(cfg, out_dir) -> dict` (flat metrics);
its CLI is then just:

    def add_arguments(parser): add_job_arguments(parser)
    def main(args): return job_main(args, Config, run)

    avfusion <task> --config FILE [--config FILE2] [--set key=value ...] --out DIR
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError, load_config


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config; several are merged left to right")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one key, e.g. --set optim.epochs=2")
    parser.add_argument("--out", required=True, type=Path, help="run folder (resumes if it holds a checkpoint)")


def load_job_config(config_cls: type, files: list, overrides: list) -> Any:
    return load_config(config_cls, files, overrides)


def job_main(args: argparse.Namespace, config_cls: type, run: Callable[[Any, Path], dict]) -> int:
    try:
        cfg = load_job_config(config_cls, args.config, args.overrides)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = run(cfg, args.out)
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return 0
