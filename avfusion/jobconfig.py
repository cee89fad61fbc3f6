"""Write a run folder's `job_config.yaml`: what every heavy rule of the DAG does before it launches.

    python -m avfusion.jobconfig results/runs/tiny/pretrain/deepavfusion '{"seed": 0, ...}'

The config comes as JSON (one shell word); the file is the same YAML the job reads with `--config`.
A run folder left by a *different* config (its checkpoint would be resumed with the new one) is
moved aside to `<run>.replaced-<time>` first; the same config resumes in place.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from .io import atomic_write_text

JOB_CONFIG_HEADER = "# written by the Snakefile (workflow/rules/common.smk: job_config); edit the config files instead\n"


def job_config_text(cfg: dict) -> str:
    return JOB_CONFIG_HEADER + yaml.safe_dump(cfg, sort_keys=False)


def write_job_config(folder: str | Path, cfg: dict) -> Path | None:
    """Write `<folder>/job_config.yaml`; returns the folder the old run was moved to, or None."""
    folder = Path(folder)
    config_file = folder / "job_config.yaml"
    text = job_config_text(cfg)
    stale = None
    if config_file.is_file() and config_file.read_text() != text:
        stale = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
        folder.rename(stale)
        print(f"{folder}: the job config changed; the old run folder (and its checkpoint) moved to {stale}")
    atomic_write_text(config_file, text)
    return stale


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m avfusion.jobconfig RUN_DIR CONFIG_JSON", file=sys.stderr)
        return 2
    write_job_config(argv[0], json.loads(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
