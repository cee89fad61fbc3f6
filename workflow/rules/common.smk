# Shared by every rule: the config is validated and one avfusion.runs.Plan is built when the Snakefile
# is parsed, so a bad config fails before any job starts. The plan (variants, seeds, run folders, per-job
# configs checked by each task's Config, launch arguments, the checks) lives in avfusion/runs.py; this
# file binds it to Snakemake: WorkflowError, the heavy rules' shell command, scheduler resources and
# the input functions.
import functools
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from avfusion.runs import DOWNSTREAM_TASKS, TASKS, Plan, PlanError, deep_merge, split_variant  # noqa: F401

# (workflow is None when tests execute this file outside Snakemake, with __file__ set)
REPO = Path(workflow.basedir) if workflow is not None else Path(__file__).resolve().parents[2]
ALL_TASKS = list(TASKS)

# `--config seeds=[0]` arrives as ['0'] and `seeds=0` as 0: read both as a list of integers
if isinstance(config.get("seeds"), (int, str, list)):
    _seeds = config["seeds"] if isinstance(config["seeds"], list) else [config["seeds"]]
    config["seeds"] = [int(s) if isinstance(s, str) and s.strip().lstrip("-").isdigit() else s for s in _seeds]
validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))


def profile_executor():
    """The executor a profile chose with `default-resources: [avf_executor='slurm']` (workflow/profiles/slurm),
    or None. A default resource survives a user's --configfile / --config, which replace the profile's
    `configfiles:` / `config:` keys; Snakemake passes it on to the processes that run the jobs."""
    import ast

    try:
        resource = workflow.resource_settings.default_resources["avf_executor"]
    except (AttributeError, KeyError, TypeError):
        return None
    raw = getattr(resource, "raw", None)
    try:
        value = ast.literal_eval(raw) if isinstance(raw, str) else raw
    except (ValueError, SyntaxError):
        value = raw
    if value not in ("debug", "local", "slurm"):
        raise WorkflowError(f"default resource avf_executor={raw!r}: choose one of debug, local, slurm")
    return value


# `executor: auto` (the default) = the profile's choice, else debug; an explicit executor always wins
if config["executor"] == "auto":
    config["executor"] = (profile_executor() if workflow is not None else None) or "debug"
EXECUTOR = config["executor"]


def _planned(fn):
    """`fn` with a PlanError turned into a WorkflowError (how Snakemake names a bad config key)."""
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PlanError as err:
            raise WorkflowError(str(err)) from None
    return call


PLAN = _planned(Plan)(config)
_planned(PLAN.check)()
SCALE, RESULTS, RUNS, VARIANTS, SEEDS = PLAN.scale, PLAN.results, PLAN.runs, PLAN.variants, PLAN.seeds
variants_of, run_dir, manifest_dir, needs_unimodal_runs = PLAN.variants_of, PLAN.run_dir, PLAN.manifest_dir, PLAN.needs_unimodal_runs
source_manifest_dir = PLAN.source_manifest_dir
wildcard_regex, pretrain_regex, seed_folder, split_seed = PLAN.wildcard_regex, PLAN.pretrain_regex, PLAN.seed_folder, PLAN.split_seed
shared_pretrain, pretrain_run, launch_args = PLAN.shared_pretrain, PLAN.pretrain_run, PLAN.launch_args
released_checkpoint = _planned(PLAN.released_checkpoint)
dataset_of, job_config = _planned(PLAN.dataset_of), _planned(PLAN.job_config)
job_resources, job_threads, job_ranks = PLAN.job_resources, PLAN.job_threads, PLAN.job_ranks


def run_job(task, variant, cfg, log, command=None):
    """What a heavy rule's shell command does (`job_shell`), in this process (avfusion.jobconfig)."""
    from avfusion.jobconfig import run_job as run_in_folder

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    return run_in_folder(run_dir(task, variant), cfg, shlex.split(launch_args(task, variant, command)), log)


@functools.lru_cache(maxsize=None)  # the scheduler re-evaluates params of every ready job at each selection
def job_shell(task, variant, command=None):
    """The heavy rules' shell command: avfusion.jobconfig writes <run>/job_config.yaml (a run folder of
    another config is moved aside; a finished run is rerun in <run>.next and replaced only once the
    new one has finished) and runs avfusion.launch."""
    import json

    folder = run_dir(task, variant)
    cfg = json.dumps(job_config(task, variant), separators=(",", ":"))
    warm = " --warm" if config.get("job_server", True) else ""   # avfusion/jobserver.py (debug executor, 1 CPU)
    return (f"python -m avfusion.jobconfig {shlex.quote(folder)} {shlex.quote(cfg)}{warm} "
            f"--log {shlex.quote(str(Path(folder, 'launch.log')))} -- {launch_args(task, variant, command)}")


# ----------------------------------------------------------------------------- scheduler resources
def local_gpus():
    """GPUs this machine gives the local executors (`local_gpus`: auto = torch.cuda.device_count())."""
    if config["executor"] == "slurm":
        return 0
    if config["local_gpus"] == "auto":
        import torch

        return torch.cuda.device_count()
    return int(config["local_gpus"])


LOCAL_GPUS = local_gpus()


def rule_resources(task):
    """Snakemake `resources:` of a job: mem_mb and runtime from resources.<task>; gpus = the cards
    the job holds *on this machine*: 1 for a local job that will run on CUDA (device auto or cuda,
    when local_gpus > 0), else 0; a SLURM job holds its GPUs on the cluster (its count is passed to
    sbatch). The profiles cap gpus (local: 1), so two local jobs never share one card."""
    res = job_resources(task)
    device = config["tasks"].get(task, {}).get("device", "auto")
    gpus = 1 if LOCAL_GPUS > 0 and device in ("auto", "cuda") else 0
    return {"mem_mb": int(round(res["mem_gb"] * 1024)), "runtime": int(res["time_min"]), "gpus": gpus}


def downstream_resource(key):
    return lambda wildcards: rule_resources(wildcards.task)[key]


def released_runs(wildcards=None):
    """Every downstream run of the released variants whose checkpoint the config gives: each task
    of Tables 1-3 and 7 on each of its datasets (the first dataset is the plain folder), every seed."""
    runs = []
    for name in variants_of("released"):
        if not config.get("released_checkpoints", {}).get(VARIANTS[name]["released"]):
            continue
        for task in ("linprobe", "finetune", "separation", "segmentation", "localization"):
            for i, dataset in enumerate(config["task_datasets"].get(task, [])):
                folder = name if i == 0 else f"{name}@{dataset}"
                runs += [f"{run_dir(task, folder + seed_folder(seed))}/metrics.json" for seed in SEEDS]
    if not runs:
        raise WorkflowError("config error at 'released_checkpoints': no released checkpoint given (vggsound / "
                            "audioset); see README \"Released checkpoints\"")
    return runs


# ----------------------------------------------------------------------------- input functions
def pretrain_inputs(wildcards):
    name, _ = split_variant(wildcards.variant)
    seed = split_seed(wildcards.variant)[1]
    inputs = {"manifest": f"{manifest_dir(dataset_of('pretrain', wildcards.variant))}/manifest.csv"}
    if needs_unimodal_runs(name):
        inputs["init_image"] = f"{pretrain_run('mae_image', seed)}/metrics.json"
        inputs["init_audio"] = f"{pretrain_run('mae_audio', seed)}/metrics.json"
    return inputs


def downstream_inputs(wildcards):
    name, _ = split_variant(wildcards.variant)
    kind = VARIANTS[name]["kind"]
    if kind == "supervised" and wildcards.task != "separation":
        raise WorkflowError(f"variant {name!r} (kind supervised) only has a separation run, not {wildcards.task}")
    if kind == "efficiency" and wildcards.task != "efficiency":
        raise WorkflowError(f"variant {name!r} (kind efficiency) only has an efficiency run, not {wildcards.task}")
    inputs = {}
    if wildcards.task != "efficiency":
        inputs["manifest"] = f"{manifest_dir(dataset_of(wildcards.task, wildcards.variant))}/manifest.csv"
    if kind in ("avmae", "unimodal") and wildcards.task != "efficiency":
        inputs["pretrain"] = f"{pretrain_run(name, split_seed(wildcards.variant)[1])}/metrics.json"
    if kind == "released" and wildcards.task != "efficiency":
        inputs["checkpoint"] = released_checkpoint(name)
    return inputs


def alias_target(wildcards):
    base, seed = split_seed(wildcards.variant)
    name, dataset = split_variant(wildcards.variant)
    target = VARIANTS[name]["alias_of"] + (f"@{dataset}" if dataset else "") + seed_folder(seed)
    return f"{run_dir(wildcards.task, target)}/metrics.json"


def prepare_root(wildcards):
    """`datasets.<name>.root` of a prepared dataset; empty -> a config error naming the key."""
    root = config["datasets"][wildcards.dataset].get("root", "")
    if not root:
        raise WorkflowError(f"config error at 'datasets.{wildcards.dataset}.root': empty; "
                            "give the dataset's root folder (see workflow/config/scales/paper.yaml)")
    return root
