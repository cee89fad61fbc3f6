# Shared by every rule: config layers + validation, variants, per-job configs and launch commands.
# Everything here runs when the Snakefile is parsed, so a bad config fails before any job starts.
import copy
import posixpath
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# (workflow is None when tests execute this file outside Snakemake, with __file__ set)
REPO = Path(workflow.basedir) if workflow is not None else Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "workflow" / "config"
SCHEMAS = REPO / "workflow" / "schemas"
DOWNSTREAM_TASKS = ["linprobe", "finetune", "separation", "segmentation", "localization", "efficiency"]
ALL_TASKS = ["pretrain", *DOWNSTREAM_TASKS, "classical-separation"]

validate(config, str(SCHEMAS / "config.schema.yaml"))
SCALE = config["scale"]
RESULTS = config["results"]
RUNS = f"{RESULTS}/runs/{SCALE}"
EXPERIMENTS = yaml.safe_load(Path(config["experiments"]).read_text())
validate(EXPERIMENTS, str(SCHEMAS / "experiments.schema.yaml"))
VARIANTS = EXPERIMENTS["variants"]
# Seeds: every run of a variant is repeated per seed; with more than one seed each run folder gets a
# /seed<k> level (<task>/<variant>[@<dataset>]/seed<k>); with one seed it is the plain folder.
SEEDS = list(config.get("seeds") or [config["seed"]])
if len(set(SEEDS)) != len(SEEDS):
    raise WorkflowError(f"config error at 'seeds': {SEEDS} repeats a seed")


def _fail(key, problem):
    raise WorkflowError(f"config error at '{key}': {problem}")


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def variants_of(*kinds):
    return [name for name, spec in VARIANTS.items() if spec["kind"] in kinds]


def wildcard_regex(names):
    """`name` or `name@dataset` for the given variant names, + `/seed<k>` when the scale has several seeds."""
    seed = r"[/]seed[0-9]+" if len(SEEDS) > 1 else ""   # [/]: a regex, not a path (snakemake --lint)
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return f"({alternatives})(@[a-z0-9_]+)?{seed}"


def pretrain_regex():
    """Pretraining run folders: per seed, except variants with `shared_pretrain` (one plain folder)."""
    shared = [n for n in variants_of("avmae", "unimodal") if VARIANTS[n].get("shared_pretrain")]
    seeded = [n for n in variants_of("avmae", "unimodal") if n not in shared]
    if not shared or len(SEEDS) == 1:
        return wildcard_regex(seeded + shared)
    plain = "|".join(re.escape(n) for n in sorted(shared, key=len, reverse=True))
    return f"(?:{wildcard_regex(seeded)}|(?:{plain})(?:@[a-z0-9_]+)?)"


# run folders <variant>[@<dataset>]<SEED_LEVEL><k> (spelled so that snakemake --lint sees no absolute path)
SEED_LEVEL = f"{posixpath.sep}seed"


def seed_folder(seed):
    """The run-folder suffix of one seed (SEED_LEVEL, then k) when the scale runs several seeds, else ''."""
    return f"{SEED_LEVEL}{seed}" if len(SEEDS) > 1 else ""


def split_seed(variant):
    """name[@dataset], SEED_LEVEL, k -> ('name[@dataset]', k); without a seed level -> (variant, the only seed)."""
    base, _, seed = variant.partition(SEED_LEVEL)
    return base, int(seed) if seed else SEEDS[0]


def split_variant(variant):
    name, _, dataset = split_seed(variant)[0].partition("@")
    return name, dataset or None


def shared_pretrain(name):
    """Variants pretrained once and shared by every seed (the unimodal inits): one plain pretrain folder."""
    return bool(VARIANTS[name].get("shared_pretrain", False))


def pretrain_run(name, seed):
    """The pretraining run folder that seed `seed` of variant `name` starts from."""
    return run_dir("pretrain", name if shared_pretrain(name) else f"{name}{seed_folder(seed)}")


def dataset_of(task, variant):
    """The dataset of a run folder: `<variant>@<dataset>`, else the task's first dataset."""
    name, dataset = split_variant(variant)
    key = "classical-separation" if VARIANTS[name]["kind"] == "classical" else task
    allowed = config["task_datasets"].get(key, [])
    if dataset is None:
        if not allowed:
            _fail(f"task_datasets.{key}", f"no dataset for task {key} at scale {SCALE}")
        return allowed[0]
    if dataset not in allowed:
        _fail(f"task_datasets.{key}", f"run {task}/{variant}: dataset {dataset!r} is not one of {allowed}")
    return dataset


def manifest_dir(dataset):
    return f"{config['data_dir']}/{SCALE}/{dataset}"


def preset_name(template):
    return template.replace("{size}", config["preset_size"])


def model_section(name):
    """The `model:` section of every job of variant `name` (presets resolved and validated here)."""
    from avfusion.models.registry import model_config
    import baselines.cavmae  # noqa: F401  (registers its presets)

    spec = VARIANTS[name]
    section = copy.deepcopy(spec["model"])
    section["preset"] = preset_name(section["preset"])
    overrides = {k: v for k, v in section.items() if k != "preset"}
    try:
        full = model_config(section["preset"], overrides)
    except (KeyError, ValueError) as err:
        _fail(f"variants.{name}.model", str(err).strip("'\""))
    if "fusion_layers_of_12" in spec:
        from avfusion.models.presets import fusion_layers
        layers = fusion_layers(spec["fusion_layers_of_12"], full["depth"])
        section = deep_merge(section, {"fusion": {"layers": layers}})
    return section


def sop_section(name):
    from avfusion.models.registry import model_config
    import baselines.sound_of_pixels  # noqa: F401

    try:
        full = model_config(preset_name(VARIANTS[name]["sop_preset"]))
    except (KeyError, ValueError) as err:
        _fail(f"variants.{name}.sop_preset", str(err))
    return {k: v for k, v in full.items() if k != "family"}


def needs_unimodal_runs(name):
    spec = VARIANTS[name]
    return spec["kind"] == "avmae" and spec.get("unimodal_init", True) and not config["unimodal_init"]["image"]


def released_checkpoint(name):
    """The released checkpoint file of variant `name` (kind released); empty -> a config error."""
    key = VARIANTS[name]["released"]
    path = config.get("released_checkpoints", {}).get(key, "")
    if not path:
        _fail(f"released_checkpoints.{key}", "empty; give the released checkpoint_latest.pth "
              f"(README \"Released checkpoints\") to run variant {name}")
    return path


def run_dir(task, variant):
    return f"{RUNS}/{task}/{variant}"


def job_config(task, variant):
    """The full config file of one job (what `avfusion <task> --config` reads)."""
    name, _ = split_variant(variant)
    seed = split_seed(variant)[1]
    spec = VARIANTS[name]
    kind = spec["kind"]
    section = "classical-separation" if kind == "classical" else task
    cfg = deep_merge(config["tasks"].get(section, {}), {"seed": seed, "scale": SCALE})
    if task != "efficiency":
        cfg = deep_merge(cfg, {"data": {"manifest": manifest_dir(dataset_of(task, variant))}})
    if kind in ("avmae", "unimodal", "released"):
        cfg["model"] = model_section(name)
    if kind == "supervised":
        cfg["sop"] = sop_section(name)
    if task == "pretrain" and kind == "avmae":
        if spec.get("unimodal_init", True):
            init = config["unimodal_init"]
            if init["image"]:
                cfg["init"] = {"image": init["image"], "audio": init["audio"]}
            else:
                cfg["init"] = {"image": pretrain_run("mae_image", seed), "audio": pretrain_run("mae_audio", seed)}
    elif kind in ("avmae", "unimodal") and task not in ("pretrain", "efficiency"):
        cfg["init"] = {"checkpoint": pretrain_run(name, seed)}
    elif kind == "released" and task != "efficiency":
        cfg["init"] = {"checkpoint": released_checkpoint(name)}
    cfg = deep_merge(cfg, spec.get(section, {}))
    check_job(section, variant, cfg)
    return cfg


_CHECKED_JOBS = {}


def check_job(command, variant, cfg):
    """Validate a job's config against its task's own Config class (avfusion.tasks.common), as the
    job will read it: a bad key in `tasks.<task>` or `variants.<name>.<task>` fails here, when the
    Snakefile is parsed, before any run folder is touched."""
    import json
    from avfusion.config import ConfigError
    from avfusion.tasks.common import check_job_config

    key = (command, json.dumps(cfg, sort_keys=True, default=str))
    if key in _CHECKED_JOBS:
        return
    try:
        check_job_config(command, cfg)
    except ConfigError as err:
        where = f"tasks.{command}" + (f" or variants.{split_variant(variant)[0]}.{command}"
                                      if command in VARIANTS[split_variant(variant)[0]] else "")
        _fail(where, f"job {command}/{variant}: {err}")
    _CHECKED_JOBS[key] = True


def job_resources(task):
    res = deep_merge(config["resources"]["default"], config["resources"].get(task, {}))
    res.setdefault("partition", config.get("slurm_partition", ""))
    res.setdefault("account", config.get("slurm_account", ""))
    return res


def job_threads(task):
    """Snakemake cores a job holds: its CPUs when it runs here, 1 when it waits on SLURM."""
    return 1 if config["executor"] == "slurm" else job_resources(task)["cpus"]


def launch_args(task, variant, command=None):
    """`avfusion.launch` arguments but --config and --out for run folder <task>/<variant>; `command` =
    the avfusion command when it differs from the folder's task (classical-separation writes separation/<variant>)."""
    command = command or task
    res = job_resources(command)
    args = ["--executor", config["executor"], "--task", command, "--job-name", f"avf-{SCALE}-{task}-{variant}"]
    for key, value in res.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return " ".join(shlex.quote(a) for a in args)


def run_job(task, variant, cfg, log, command=None):
    """What a heavy rule's shell command does (`job_shell`), in this process (avfusion.jobconfig)."""
    from avfusion.jobconfig import run_job as run_in_folder

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    return run_in_folder(run_dir(task, variant), cfg, shlex.split(launch_args(task, variant, command)), log)


def job_shell(task, variant, command=None):
    """The heavy rules' shell command: avfusion.jobconfig writes <run>/job_config.yaml (a run folder of
    another config is moved aside; a finished run is rerun in <run>.next and replaced only once the
    new one has finished) and runs avfusion.launch."""
    import json

    folder = run_dir(task, variant)
    cfg = json.dumps(job_config(task, variant), separators=(",", ":"))
    return (f"python -m avfusion.jobconfig {shlex.quote(folder)} {shlex.quote(cfg)} "
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
        _fail("released_checkpoints", "no released checkpoint given (vggsound / audioset); "
              "see README \"Released checkpoints\"")
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


def copy_alias_metrics(source, target, log):
    """alias_run: the aliased variant's metrics.json with provenance.alias_of = its run folder."""
    import json
    from avfusion.io import atomic_write_json

    payload = json.loads(Path(source).read_text())
    payload["provenance"]["alias_of"] = str(Path(source).parent)
    atomic_write_json(target, payload)
    Path(log).write_text(f"copied {source} -> {target}\n")


def prepare_root(wildcards):
    """`datasets.<name>.root` of a prepared dataset; empty -> a config error naming the key."""
    root = config["datasets"][wildcards.dataset].get("root", "")
    if not root:
        raise WorkflowError(f"config error at 'datasets.{wildcards.dataset}.root': empty; "
                            "give the dataset's root folder (see workflow/config/scales/paper.yaml)")
    return root


# ----------------------------------------------------------------------------- checks before any job
for _name, _spec in VARIANTS.items():
    if _spec["kind"] == "alias":
        target = VARIANTS.get(_spec["alias_of"])
        if target is None or target["kind"] == "alias":
            _fail(f"variants.{_name}.alias_of", f"{_spec['alias_of']!r} is not a (non-alias) variant")
    if _spec["kind"] in ("avmae", "unimodal", "released"):
        model_section(_name)
    if _spec["kind"] == "supervised":
        sop_section(_name)
    for _task in ALL_TASKS:
        if _task in _spec and _task not in config["tasks"]:
            _fail(f"variants.{_name}.{_task}", f"no task {_task!r} in the config's tasks")
for _task, _names in config["task_datasets"].items():
    for _dataset in _names:
        if _dataset not in config["datasets"]:
            _fail(f"task_datasets.{_task}", f"dataset {_dataset!r} is not in datasets ({sorted(config['datasets'])})")
for _dataset, _spec in config["datasets"].items():
    if _spec["source"] == "tuxav" and SCALE not in ("smoke", "tiny"):
        _fail(f"datasets.{_dataset}.source", f"tuxav exists at scales smoke and tiny, not {SCALE}")
    if _spec["source"] == "prepare" and "name" not in _spec:
        _fail(f"datasets.{_dataset}.name", "missing: the `avfusion data prepare` dataset key")
for _name, _spec in VARIANTS.items():  # every job config of the DAG, validated by its task's Config
    _tasks = {"avmae": ["pretrain", *DOWNSTREAM_TASKS], "unimodal": ["pretrain", *DOWNSTREAM_TASKS],
              "supervised": ["separation"], "classical": ["separation"]}.get(_spec["kind"], [])
    for _task in _tasks:
        _key = "classical-separation" if _spec["kind"] == "classical" else _task
        if _task == "efficiency" or config["task_datasets"].get(_key):
            job_config(_task, _name)
if bool(config["unimodal_init"]["image"]) != bool(config["unimodal_init"]["audio"]):
    _fail("unimodal_init", "give both image and audio weight files, or neither")
if config["executor"] == "slurm":
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        _fail("executor", "slurm: sbatch/sinfo are not on PATH")
    _sinfo = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30)
    if _sinfo.returncode != 0:
        _fail("executor", f"slurm: sinfo failed, is the cluster up and SLURM_CONF set? {_sinfo.stderr.strip()}")
    _partitions = set(_sinfo.stdout.split())
    for _task in ALL_TASKS:
        _p = job_resources(_task)["partition"]
        if _p and _p not in _partitions:
            _key = f"resources.{_task}.partition" if config["resources"].get(_task, {}).get("partition") else "slurm_partition"
            _fail(_key, f"SLURM partition {_p!r} does not exist; the cluster has {sorted(_partitions)}")
