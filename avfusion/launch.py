"""Run one job of the DAG through submitit: in-process (debug), as a subprocess (local) or on SLURM.

Every heavy Snakemake rule calls this entry point, waits for the job, and fails with the job's
error if the job failed:

    python -m avfusion.launch --executor debug --task efficiency \
        --config avfusion/tasks/examples/efficiency.yaml --out runs/efficiency/x
    python -m avfusion.launch --executor slurm --task pretrain \
        --config results/runs/tiny/pretrain/deepavfusion/job_config.yaml --out results/runs/tiny/pretrain/deepavfusion \
        --partition gpu --account mylab --gpus 1 --cpus 8 --mem-gb 60 --time-min 1440

(the DAG writes each job's config to <run folder>/job_config.yaml: avfusion/runs.py, Plan.job_config)

- A run folder that already holds `metrics.json` is finished: nothing is submitted.
- A SLURM job recorded in `<out>/submitit/launch.json` that is still queued or running is
  re-attached to (e.g. after Snakemake was restarted), never submitted a second time.
- The submitted callable (`TaskJob`) implements submitit's `checkpoint()`: on timeout or
  preemption SLURM signals the job, submitit requeues it, and the task resumes from
  `<out>/checkpoints/checkpoint_latest.pth`. A plain `scontrol requeue` resumes the same way.
- submitit's files (sbatch script, pickles, stdout/stderr per job id) live in `<out>/submitit/`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .io import atomic_write_json, read_json
from .progress import timestamp

EXECUTORS = ("debug", "local", "slurm")
# squeue states after which a job will not run again by itself
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                   "BOOT_FAIL", "DEADLINE", "PREEMPTED_CANCELLED", "SPECIAL_EXIT", "REVOKED"}


class LaunchError(RuntimeError):
    """The job could not be submitted, or it failed; the message says which and why."""


@dataclasses.dataclass
class Resources:
    """What one job asks the scheduler for (SLURM); `time_min` is also the local executor's timeout."""

    partition: str = ""        # "" = the cluster's default partition
    account: str = ""          # "" = no -A
    gpus: int = 0              # GPUs per node
    cpus: int = 1              # CPUs per task (= per rank)
    nodes: int = 1             # SLURM nodes
    tasks_per_node: int = 0    # ranks per node; 0 = one per GPU (at least 1). Ranks = nodes x tasks_per_node
    mem_gb: float = 2.0
    time_min: int = 60
    constraint: str = ""       # sbatch --constraint, e.g. "a100|h100"
    signal_delay_s: int = 90   # USR2 this long before the time limit -> checkpoint() + requeue
    max_requeues: int = 20     # submitit's slurm_max_num_timeout

    def ranks_per_node(self) -> int:
        return self.tasks_per_node or max(1, self.gpus)

    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node()

    def validate(self) -> None:
        for key in ("gpus", "cpus", "nodes", "tasks_per_node", "time_min", "signal_delay_s", "max_requeues"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 0:
                raise LaunchError(f"resource '{key}' must be a non-negative integer, got {value!r}")
        if self.cpus < 1 or self.time_min < 1 or self.nodes < 1:
            raise LaunchError(f"resources 'cpus', 'time_min' and 'nodes' must be >= 1, "
                              f"got {self.cpus}, {self.time_min}, {self.nodes}")
        if self.gpus and self.tasks_per_node and self.tasks_per_node != self.gpus:
            raise LaunchError(f"resource 'tasks_per_node' = {self.tasks_per_node} but 'gpus' = {self.gpus}: "
                              "one rank per GPU (leave tasks_per_node 0)")
        if not self.mem_gb > 0:
            raise LaunchError(f"resource 'mem_gb' must be > 0, got {self.mem_gb!r}")


def rank_environment() -> dict[str, str]:
    """RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT of this task of a multi-task submitit job
    (SLURM: one task per GPU; local: `tasks_per_node` processes), from submitit's JobEnvironment;
    {} for a single-task job or outside submitit. The port is derived from the job id, so two jobs
    on one node do not collide and a requeued job (same id) gets the same one."""
    import submitit

    if "SUBMITIT_EXECUTOR" not in os.environ:
        return {}
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:
        return {}
    if env.num_tasks <= 1:
        return {}
    job_digits = "".join(c for c in str(env.job_id).split("_")[0] if c.isdigit()) or "0"
    return {"RANK": str(env.global_rank), "LOCAL_RANK": str(env.local_rank), "WORLD_SIZE": str(env.num_tasks),
            "LOCAL_WORLD_SIZE": str(env.num_tasks // max(1, env.num_nodes)),
            "MASTER_ADDR": str(env.hostnames[0]), "MASTER_PORT": str(20000 + int(job_digits) % 20000)}


class TaskJob:
    """The submitted callable: `avfusion <task> --config ... --set ... --out DIR`, run in this process.

    `checkpoint()` returns a new submission of the same command: the task itself resumes from
    `DIR/checkpoints/checkpoint_latest.pth`, so nothing needs to be pickled but the command.
    """

    def __init__(self, task: str, out_dir: str | Path, configs: list[str] = (), overrides: list[str] = ()):
        self.task = task
        self.out_dir = str(Path(out_dir).resolve())
        self.configs = [str(Path(c).resolve()) for c in configs]
        self.overrides = list(overrides)

    def argv(self) -> list[str]:
        argv = [self.task]
        for path in self.configs:
            argv += ["--config", path]
        for item in self.overrides:
            argv += ["--set", item]
        return argv + ["--out", self.out_dir]

    def __call__(self) -> dict:
        from .cli import describe, run_command

        ranks = rank_environment()
        os.environ.update(ranks)  # read by avfusion.distributed.init_distributed (NCCL on GPU, gloo on CPU)
        if ranks:
            print(f"[launch] rank {ranks['RANK']} of {ranks['WORLD_SIZE']} (local rank {ranks['LOCAL_RANK']}, "
                  f"master {ranks['MASTER_ADDR']}:{ranks['MASTER_PORT']})", flush=True)
        print(f"[launch] avfusion {' '.join(self.argv())}", flush=True)
        try:
            code = run_command(self.argv())
        except SystemExit as exit_:
            if not isinstance(exit_.code, str):  # e.g. submitit's sys.exit(-1) after requeueing: let it through
                raise
            raise LaunchError(f"avfusion {self.task}: {exit_.code}") from None
        except Exception as err:  # the job's own error, as the CLI would print it (config, data, busy folder)
            raise LaunchError(f"avfusion {self.task}: {describe(err)}") from err
        if code:
            raise LaunchError(f"avfusion {self.task} exited with code {code}")
        if ranks and ranks["RANK"] != "0":
            return {}  # rank 0 writes metrics.json; submitit's job result is rank 0's
        metrics_path = Path(self.out_dir) / "metrics.json"
        if not metrics_path.is_file():
            raise LaunchError(f"avfusion {self.task} finished without writing {metrics_path}")
        return read_json(metrics_path)["metrics"]

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        print(f"[launch] checkpoint(): requeueing {self.task} -> {self.out_dir}", flush=True)
        return submitit.helpers.DelayedSubmission(TaskJob(self.task, self.out_dir, self.configs, self.overrides))

    def __repr__(self) -> str:
        return f"TaskJob(avfusion {' '.join(self.argv())})"


def make_executor(executor: str, folder: Path, resources: Resources, job_name: str):
    """A submitit executor of the named kind (always explicit: AutoExecutor would pick slurm
    as soon as `srun` is on PATH)."""
    import submitit

    if executor == "debug" and resources.world_size() > 1:
        raise LaunchError(f"executor 'debug' runs one process; {resources.world_size()} ranks need local or slurm")
    if executor == "debug":
        return submitit.DebugExecutor(folder=folder)
    if executor == "local":
        if resources.nodes > 1:
            raise LaunchError(f"executor 'local' runs on this machine: nodes={resources.nodes} needs slurm")
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=resources.time_min, tasks_per_node=resources.ranks_per_node())
        return ex
    if executor == "slurm":
        if shutil.which("sbatch") is None:
            raise LaunchError("executor 'slurm': sbatch is not on PATH")
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=resources.max_requeues)
        params: dict[str, Any] = dict(
            # one SLURM task per GPU (MAE's launcher), each task one rank (see rank_environment)
            job_name=job_name, time=resources.time_min, nodes=resources.nodes,
            ntasks_per_node=resources.ranks_per_node(),
            cpus_per_task=resources.cpus, mem=f"{int(round(resources.mem_gb * 1024))}M",
            signal_delay_s=resources.signal_delay_s,
            # one rank that fails ends the job: without it the other ranks wait in their next collective
            # until the time limit (found by the rehearsal: a 2-rank job hung 20 min after rank 0 failed)
            srun_args=["--kill-on-bad-exit=1"],
        )
        if resources.partition:
            params["partition"] = resources.partition
        if resources.account:
            params["account"] = resources.account
        if resources.gpus:
            params["gpus_per_node"] = resources.gpus
        if resources.constraint:
            params["constraint"] = resources.constraint
        ex.update_parameters(**params)
        return ex
    raise LaunchError(f"unknown executor {executor!r}; choose from {list(EXECUTORS)}")


def slurm_state(job_id: str) -> str:
    """The job's state from `squeue -t all` ('' once it has left squeue, after MinJobAge)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:
            return ""
        raise LaunchError(f"squeue failed for job {job_id}: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[0].strip() if out.stdout.strip() else ""


def _ended(state: str) -> bool:
    """True once a job will not run again by itself (or has left squeue)."""
    return state == "" or state.split()[0] in TERMINAL_STATES


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no {path.name})"


# squeue back-off: a login node is shared, and 16 jobs in flight polled every 2 s made about 8 calls
# a second. squeue is asked after SQUEUE_FIRST_S, then at doubling intervals up to SQUEUE_MAX_S while
# the job waits in the queue, and at least every SQUEUE_RUNNING_S (never more often) once it runs.
# Between squeue calls only the job's result file is looked at (a local stat), so a finished job
# is still noticed within `poll_s`; a job killed without a result is noticed within the interval.
SQUEUE_FIRST_S = 5.0
SQUEUE_RUNNING_S = 30.0
SQUEUE_MAX_S = 120.0


def next_squeue_interval(previous: float, state: str, running_s: float = SQUEUE_RUNNING_S,
                         max_s: float = SQUEUE_MAX_S) -> float:
    """Seconds until the next squeue call after one that returned `state`: doubling, capped at
    `max_s`, and never below `running_s` once the job runs (or is completing)."""
    interval = min(previous * 2, max_s)
    if state.split()[:1] in (["RUNNING"], ["COMPLETING"]):
        interval = max(interval, running_s)
    return interval


def wait_slurm(job, poll_s: float = 2.0, grace_s: float = 20.0, first_s: float = SQUEUE_FIRST_S,
               running_s: float = SQUEUE_RUNNING_S, max_s: float = SQUEUE_MAX_S) -> Any:
    """Wait for a submitit SLURM job with squeue (works without slurmdbd/sacct) and return its result.

    The result file is checked every `poll_s`; squeue with the back-off of `next_squeue_interval`."""
    finished_at = None
    last_state = None
    interval, next_call = first_s / 2, 0.0
    while not job.paths.result_pickle.exists():
        now = time.time()
        if now >= next_call:
            state = slurm_state(job.job_id)
            if state != last_state:
                print(f"{timestamp()} [launch] SLURM job {job.job_id}: {state or 'gone from squeue'}", flush=True)
                last_state = state
            if _ended(state):
                finished_at = finished_at or now
                if now - finished_at > grace_s:  # the result pickle never came
                    raise LaunchError(f"SLURM job {job.job_id} ended ({state or 'left squeue'}) without a result; "
                                      f"stderr tail of {job.paths.stderr}:\n{_tail(job.paths.stderr)}")
                interval = min(poll_s, interval)  # ended: only the grace period is left to wait
            else:
                finished_at = None
                interval = next_squeue_interval(interval, state, running_s, max_s)
            next_call = now + interval
        time.sleep(max(0.0, min(poll_s, next_call - time.time())))
    # the result is written just before the job step exits: let SLURM record the end too
    deadline = time.time() + grace_s
    while time.time() < deadline and not _ended(slurm_state(job.job_id)):
        time.sleep(min(poll_s, 0.5))
    # rank 0's result; the error of every rank that wrote one is raised. Not job.results(): that waits
    # for every rank's result file, and a rank that srun killed because another failed writes none
    # (it waited forever: found by the rehearsal)
    return [task.result() for task in (job.task(i) for i in range(job.num_tasks))
            if task.paths.result_pickle.exists()][0]


def _record(folder: Path, **info) -> None:
    atomic_write_json(folder / "launch.json", info)


def _live_slurm_job(folder: Path):
    """The SLURM job recorded in `folder/launch.json` if it is still queued or running, else None."""
    import submitit

    record = folder / "launch.json"
    if not record.is_file():
        return None
    info = read_json(record)
    if info.get("executor") != "slurm" or shutil.which("squeue") is None:
        return None
    try:
        state = slurm_state(info["job_id"])
    except LaunchError:
        return None
    if not _ended(state):
        ranks = int(info.get("resources", {}).get("nodes", 1)) * Resources(**{
            k: v for k, v in info.get("resources", {}).items() if k in ("gpus", "tasks_per_node")}).ranks_per_node()
        return submitit.SlurmJob(folder=folder, job_id=str(info["job_id"]), tasks=tuple(range(ranks)))
    return None


def launch(job: Callable[[], Any], out_dir: str | Path, executor: str = "local",
           resources: Resources | None = None, job_name: str = "avfusion", poll_s: float = 2.0) -> Any:
    """Run `job` (a callable with `checkpoint()`) for run folder `out_dir` and return its result.

    Returns the metrics of `out_dir/metrics.json` right away if the run is already finished.
    """
    out_dir = Path(out_dir)
    resources = resources or Resources()
    resources.validate()
    metrics_path = out_dir / "metrics.json"
    if metrics_path.is_file():
        print(f"[launch] {metrics_path} exists: finished run, nothing submitted", flush=True)
        return read_json(metrics_path)["metrics"]
    folder = out_dir / "submitit"
    folder.mkdir(parents=True, exist_ok=True)

    if executor == "slurm":
        live = _live_slurm_job(folder)
        if live is not None:
            print(f"[launch] re-attaching to SLURM job {live.job_id} (still queued/running)", flush=True)
            return wait_slurm(live, poll_s=poll_s)

    ex = make_executor(executor, folder, resources, job_name)
    if executor == "debug":
        _record(folder, executor="debug", job_id="debug", job_name=job_name, submitted_at=time.time())
        # DebugJob.result() drops into pdb on an exception; run the submission directly instead
        return ex.submit(job).submission().result()
    try:
        submitted = ex.submit(job)
    except Exception as err:  # sbatch rejected it: bad partition, account, constraint ...
        raise LaunchError(f"submission to {executor} failed: {err}") from None
    _record(folder, executor=executor, job_id=str(submitted.job_id), job_name=job_name,
            submitted_at=time.time(), resources=dataclasses.asdict(resources))
    print(f"[launch] submitted {job_name} to {executor} as job {submitted.job_id}; logs in {folder}", flush=True)
    if executor == "slurm":
        return wait_slurm(submitted, poll_s=poll_s)
    return submitted.results()[0]  # rank 0's result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=EXECUTORS, default="local")
    parser.add_argument("--task", required=True, help="avfusion command, e.g. pretrain, linprobe")
    parser.add_argument("--config", action="append", default=[], metavar="FILE")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    parser.add_argument("--out", required=True, type=Path, help="run folder")
    parser.add_argument("--job-name", default="", help="SLURM job name (default avf-<scale>-<task>-<variant>)")
    defaults = Resources()
    for field in dataclasses.fields(Resources):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(defaults, field.name)), default=getattr(defaults, field.name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avfusion.launch", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    from .cli import COMMANDS

    if args.task not in COMMANDS:
        parser.error(f"--task {args.task!r} is not an avfusion command; choose from {', '.join(COMMANDS)}")
    resources = Resources(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Resources)})
    job_name = args.job_name or "avf-" + "-".join(args.out.resolve().parts[-3:])
    # the job uses the CPUs it asked for (torch reads these at import; inherited by local/slurm jobs)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(resources.cpus)
    job = TaskJob(args.task, args.out, args.config, args.overrides)
    try:
        metrics = launch(job, args.out, args.executor, resources, job_name)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # the job's own exception (submitit re-raises it with the job's traceback)
        print(f"error: job {job_name} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
