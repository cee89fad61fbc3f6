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

from ..config import ConfigError, load_config, load_yaml, merge, parse_overrides


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config; several are merged left to right")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one key, e.g. --set optim.epochs=2")
    parser.add_argument("--out", required=True, type=Path, help="run folder (resumes if it holds a checkpoint)")


def load_job_config(config_cls: type, files: list, overrides: list, recipes: dict | None = None) -> Any:
    """Build `config_cls` from files + overrides. With `recipes` ({name: nested dict}), the config's
    `recipe` key (from files/overrides, else the class default) picks a layer of defaults that sits
    under the files: a recipe is config data (e.g. the paper's vs the code's hyperparameters)."""
    if not recipes:
        return load_config(config_cls, files, overrides)
    raw: dict = {}
    for path in files or []:
        raw = merge(raw, load_yaml(path))
    raw = merge(raw, parse_overrides(overrides))
    name = raw.get("recipe", getattr(config_cls(), "recipe", None))
    if name not in recipes:
        raise ConfigError(f"config key 'recipe': got {name!r}, expected one of {sorted(recipes)}")
    return load_config(config_cls, files, overrides, base=recipes[name])


def job_main(args: argparse.Namespace, config_cls: type, run: Callable[[Any, Path], dict],
             recipes: dict | None = None) -> int:
    try:
        cfg = load_job_config(config_cls, args.config, args.overrides, recipes)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = run(cfg, args.out)
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return 0
