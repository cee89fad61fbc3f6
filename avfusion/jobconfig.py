"""One heavy job of the DAG: write the run folder's `job_config.yaml`, then run it through
`avfusion.launch`, never losing a finished run.

    python -m avfusion.jobconfig results/runs/tiny/pretrain/deepavfusion '{"seed": 0, ...}' \
        --log results/runs/tiny/pretrain/deepavfusion/launch.log -- --executor debug --task pretrain ...

The config comes as JSON (one shell word); the file is the same YAML the job reads with `--config`.
Without launch arguments after `--` only the file is written.
- An unfinished run folder of the same config is resumed in place; one left by a *different* config
  (its checkpoint would be resumed with the new one) is moved aside to `<run>.replaced-<time>` first.
- A finished run (`<run>/metrics.json`, which Snakemake keeps: the rules mark it `update`) stays
  until its replacement has finished: the new run goes to `<run>.next` (resumed there if it holds
  the same config), and only then does `<run>` move to `<run>.replaced-<time>` and `<run>.next`
  become `<run>`. A replacement that fails leaves `<run>` as it was.
(The rules are shell jobs: Snakemake 9 spawns each `run:` job in a child Snakemake that restores a
failed job's `update` output and then lets the parent delete it, "Cannot restore: no backup found".)
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Callable

import yaml

from .io import atomic_write_text
from .runlock import move_run_aside

JOB_CONFIG_HEADER = "# written by the Snakefile (avfusion/runs.py: Plan.job_config); edit the config files instead\n"


def job_config_text(cfg: dict) -> str:
    return JOB_CONFIG_HEADER + yaml.safe_dump(cfg, sort_keys=False)


def write_job_config(folder: str | Path, cfg: dict) -> Path | None:
    """Write `<folder>/job_config.yaml`; returns the folder the old run was moved to, or None."""
    folder = Path(folder)
    config_file = folder / "job_config.yaml"
    text = job_config_text(cfg)
    stale = None
    if config_file.is_file() and config_file.read_text() != text:
        stale = move_run_aside(folder)
        print(f"{folder}: the job config changed; the old run folder (and its checkpoint) moved to {stale}",
              flush=True)
    atomic_write_text(config_file, text)
    return stale


def run_job(out: str | Path, cfg: dict, launch_argv: list[str], log: str | Path | None = None,
            launch: Callable[[list[str]], int] | None = None) -> int:
    """Write job_config.yaml for run folder `out` and run `launch(argv + --config + --out)` in the
    folder the module doc says. -> the launcher's exit code."""
    if launch is None:
        from .launch import main as launch
    folder = Path(out)
    finished = (folder / "metrics.json").is_file()
    target = folder.with_name(f"{folder.name}.next") if finished else folder
    write_job_config(target, cfg)
    if finished:
        print(f"{folder} holds a finished run: the new run goes to {target}; the finished one stays "
              f"until the new one has finished", flush=True)
    code = launch([*launch_argv, "--config", str(target / "job_config.yaml"), "--out", str(target)])
    sys.stdout.flush()
    if code or not finished:
        return code
    stale = move_run_aside(folder)
    target.rename(folder)
    print(f"{folder}: replaced by the finished new run; the previous run moved to {stale}", flush=True)
    if log is not None and Path(log).resolve().parent == folder.resolve():
        kept = stale / Path(log).name
        if kept.is_file():
            shutil.copy2(kept, log)  # Snakemake's log of this job stays at its path
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    launch_argv = argv[argv.index("--") + 1:] if "--" in argv else []  # avfusion.launch arguments
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m avfusion.jobconfig", description=__doc__.splitlines()[0],
                                     usage="%(prog)s RUN_DIR CONFIG_JSON [--log LOG] [-- LAUNCH_ARGS (no --config/--out)]")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("config_json", help="the job's config as one JSON object")
    parser.add_argument("--log", default=None, help="Snakemake's log file of the job")
    parser.add_argument("--warm", action="store_true",
                        help="run the job in a child of the warm job server (avfusion/jobserver.py: torch imported "
                             "once per DAG, not per job); only for --executor debug --cpus 1, else ignored")
    args = parser.parse_args(own)
    cfg = json.loads(args.config_json)
    if not isinstance(cfg, dict):
        parser.error("the config must be a JSON object")
    if not launch_argv:
        write_job_config(args.run_dir, cfg)
        return 0
    if args.warm and _one_process_one_core(launch_argv):
        from .jobserver import run_warm

        code = run_warm("avfusion.jobconfig", [a for a in own if a != "--warm"] + ["--", *launch_argv])
        if code is not None:
            return code
    return run_job(args.run_dir, cfg, launch_argv, args.log)


def _one_process_one_core(launch_argv: list[str]) -> bool:
    """True for launch arguments `--executor debug` (the job runs in this process) and `--cpus 1`."""
    def value(flag: str, default: str) -> str:
        return launch_argv[launch_argv.index(flag) + 1] if flag in launch_argv[:-1] else default

    return value("--executor", "local") == "debug" and value("--cpus", "1") == "1"


if __name__ == "__main__":
    from .io import exit_now

    exit_now(int(main() or 0))  # without the interpreter's teardown (~1 CPU-s per job: avfusion.io.exit_now)
