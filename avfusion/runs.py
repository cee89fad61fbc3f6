"""The DAG's plan as a library: the task list, the run-folder rule, experiments.yaml and one config per job.

    plan = Plan(config)            # the merged DAG config: default.yaml < scales/<scale>.yaml < --config
    plan.job_config("linprobe", "late_fusion")     # the file `avfusion linprobe --config` reads
    plan.run_dir("segmentation", "late_fusion@avss_mini")   # results/runs/<scale>/segmentation/late_fusion@avss_mini

A run folder is <results>/runs/<scale>/<task>/<variant>[@<dataset>][/seed<k>]: <variant> is a name of
experiments.yaml, `@<dataset>` names a dataset other than the task's first at that scale
(`variant_folder`), `/seed<k>` is there when the scale runs several seeds (`seed_folder`); a variant
with `shared_pretrain` is pretrained once, in the plain folder, for every seed (`Plan.pretrain_run`). workflow/rules/common.smk builds one Plan when the Snakefile is parsed (so a bad
config fails before any job starts); the report (avfusion/report/tables.py) and the CLI import the
task list and the run-folder rule from here.
"""
from __future__ import annotations

import copy
import json
import posixpath
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "workflow" / "schemas"

# task -> (module with add_arguments/main, one-line help); the DAG's jobs and the CLI's job commands
TASKS: dict[str, tuple[str, str]] = {
    "pretrain": ("avfusion.tasks.pretrain", "AV-MAE (or image/audio MAE) pretraining with the kNN probe"),
    "linprobe": ("avfusion.tasks.linprobe", "linear probe on frozen features"),
    "finetune": ("avfusion.tasks.finetune", "end-to-end fine-tuning for classification"),
    "separation": ("avfusion.tasks.separation", "visually guided source separation (mix-and-separate)"),
    "segmentation": ("avfusion.tasks.segmentation", "audio-visual segmentation (AVSBench conventions)"),
    "localization": ("avfusion.tasks.localization", "sound source localization (cIoU, AUC)"),
    "efficiency": ("avfusion.tasks.efficiency", "encoder throughput and peak memory (Table 5)"),
    "classical-separation": ("baselines.classical_separation", "NMF / RPCA separation baselines"),
}
DOWNSTREAM_TASKS = ("linprobe", "finetune", "separation", "segmentation", "localization", "efficiency")
RUN_TASKS = ("pretrain", *DOWNSTREAM_TASKS)     # the task folders of results/runs/<scale>/ (and table columns)
VARIANT_KINDS = ("avmae", "unimodal", "supervised", "classical", "alias", "released", "efficiency")
SEED_LEVEL = f"{posixpath.sep}seed"    # run folders <variant>[@<dataset>]/seed<k> (spelled for snakemake --lint)


class PlanError(ValueError):
    """A DAG config or experiments.yaml value is invalid; the message names the key."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"config error at '{key}': {problem}")


# ----------------------------------------------------------------------------- run folders
def split_variant(variant: str) -> tuple[str, str | None]:
    """'late_fusion@avss_mini[/seed1]' -> ('late_fusion', 'avss_mini'); 'late_fusion' -> ('late_fusion', None)."""
    name, _, dataset = variant.partition(SEED_LEVEL)[0].partition("@")
    return name, dataset or None


def scale_seeds(config: dict) -> list[int]:
    """The seeds every run of the scale is repeated for: `seeds`, else [`seed`]."""
    seeds = list(config.get("seeds") or [config.get("seed", 0)])
    if len(set(seeds)) != len(seeds):
        raise PlanError("seeds", f"{seeds} repeats a seed")
    return seeds


def seed_folder(seed: int, seeds: list[int]) -> str:
    """The run-folder suffix of one seed: '/seed<k>' when the scale runs several seeds, else ''."""
    return f"{SEED_LEVEL}{seed}" if len(seeds) > 1 else ""


def split_seed(variant: str, seeds: list[int]) -> tuple[str, int]:
    """'name[@dataset]/seed<k>' -> ('name[@dataset]', k); without a seed level -> (variant, the first seed)."""
    base, _, seed = variant.partition(SEED_LEVEL)
    return base, int(seed) if seed else seeds[0]


def variant_folder(name: str, dataset: str | None, default_dataset: str | None) -> str:
    """The run folder's name: `name`, or `name@dataset` when `dataset` is not the task's default."""
    return name if dataset is None or dataset == default_dataset else f"{name}@{dataset}"


def task_datasets_key(task: str, kind: str) -> str:
    """The `task_datasets` key of a run: classical variants have their own (they write separation/)."""
    return "classical-separation" if kind == "classical" else task


def _names_regex(names) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


# ----------------------------------------------------------------------------- experiments.yaml
def load_experiments(path: str | Path) -> dict:
    """experiments.yaml, validated by workflow/schemas/experiments.schema.yaml and the alias rule."""
    import jsonschema

    path = Path(path)
    data = yaml.safe_load(path.read_text())
    schema = yaml.safe_load((SCHEMAS / "experiments.schema.yaml").read_text())
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise PlanError(where, f"{err.message} ({path})") from None
    known = set(schema["properties"]["variants"]["additionalProperties"]["properties"])
    for name, spec in data["variants"].items():
        for key in sorted(set(spec) - known - set(TASKS)):
            raise PlanError(f"variants.{name}.{key}", f"neither a variant key ({sorted(known)}) nor a task ({list(TASKS)})")
        if spec["kind"] == "alias":
            target = data["variants"].get(spec["alias_of"])
            if target is None or target["kind"] == "alias":
                raise PlanError(f"variants.{name}.alias_of", f"{spec['alias_of']!r} is not a (non-alias) variant")
    return data


def variant_kinds(path: str | Path) -> dict[str, str]:
    """variant -> kind, from experiments.yaml."""
    return {name: spec["kind"] for name, spec in load_experiments(path)["variants"].items()}


def check_job_config(command: str, data: dict):
    """Validate the config dict of `avfusion <command>` as the job will (built into the command's own
    Config class, recipe layer included); raises ConfigError naming the key."""
    import importlib

    from .tasks.common import build_job_config

    module = importlib.import_module(TASKS[command][0])
    return build_job_config(module.Config, data, getattr(module, "RECIPES", None))


def deep_merge(base: dict, override: dict | None) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ----------------------------------------------------------------------------- the plan
class Plan:
    """Every job of one scale: its run folder, dataset, model section, config file and launch command."""

    def __init__(self, config: dict):
        self.config = config
        self.scale = config["scale"]
        self.results = config["results"]
        self.runs = f"{self.results}/runs/{self.scale}"
        self.variants = load_experiments(config["experiments"])["variants"]
        self.seeds = scale_seeds(config)
        self.same_model_as = self._alias_same_models()
        # `executor: auto` = the profile's choice (workflow/rules/common.smk resolves it from the slurm
        # profile's default resource before the plan is built), else debug
        self.executor = "debug" if config["executor"] == "auto" else config["executor"]
        self._checked_jobs: dict = {}

    def _alias_same_models(self) -> dict[str, str]:
        """An avmae variant whose job configs equal an earlier variant's at this scale (e.g. Table 6a's
        9 and 6 of 12 fusion layers = all 4 layers of the lite model = deepavfusion) is run once: it
        becomes an alias of that variant (its run folders copy the metrics, provenance.alias_of names
        the run), as the paper's own repeated rows. Returns {variant: the variant it repeats}."""
        seen, same = {}, {}
        for name, spec in self.variants.items():
            if spec["kind"] != "avmae":
                continue
            try:
                section = self.model_section(name)
                from .models.registry import model_config

                model = model_config(section["preset"], {k: v for k, v in section.items() if k != "preset"})
            except PlanError:
                continue   # Plan.check names the bad key
            key = json.dumps({"model": model, "unimodal_init": spec.get("unimodal_init", True),
                              "shared_pretrain": spec.get("shared_pretrain", False),
                              "tasks": {t: spec[t] for t in TASKS if t in spec}}, sort_keys=True, default=str)
            if key in seen:
                same[name] = seen[key]
                self.variants[name] = {"kind": "alias", "alias_of": seen[key]}
            else:
                seen[key] = name
        return same

    # -- variants and folders
    def variants_of(self, *kinds: str) -> list[str]:
        return [name for name, spec in self.variants.items() if spec["kind"] in kinds]

    def run_dir(self, task: str, variant: str) -> str:
        return f"{self.runs}/{task}/{variant}"

    def wildcard_regex(self, names) -> str:
        """`name` or `name@dataset` for the given variant names, + `/seed<k>` when the scale has several seeds."""
        seed = r"[/]seed[0-9]+" if len(self.seeds) > 1 else ""   # [/]: a regex, not a path (snakemake --lint)
        return f"({_names_regex(names)})(@[a-z0-9_]+)?{seed}"

    def pretrain_regex(self) -> str:
        """Pretraining run folders: per seed, except variants with `shared_pretrain` (one plain folder)."""
        trained = self.variants_of("avmae", "unimodal")
        shared = [n for n in trained if self.shared_pretrain(n)]
        seeded = [n for n in trained if n not in shared]
        if not shared or len(self.seeds) == 1:
            return self.wildcard_regex(seeded + shared)
        return f"(?:{self.wildcard_regex(seeded)}|(?:{_names_regex(shared)})(?:@[a-z0-9_]+)?)"

    def seed_folder(self, seed: int) -> str:
        return seed_folder(seed, self.seeds)

    def split_seed(self, variant: str) -> tuple[str, int]:
        return split_seed(variant, self.seeds)

    def shared_pretrain(self, name: str) -> bool:
        """Variants pretrained once and shared by every seed (the unimodal inits): one plain pretrain folder."""
        return bool(self.variants[name].get("shared_pretrain", False))

    def pretrain_run(self, name: str, seed: int) -> str:
        """The pretraining run folder that seed `seed` of variant `name` starts from."""
        return self.run_dir("pretrain", name if self.shared_pretrain(name) else f"{name}{self.seed_folder(seed)}")

    def dataset_of(self, task: str, variant: str) -> str:
        """The dataset of a run folder: `<variant>@<dataset>`, else the task's first dataset."""
        name, dataset = split_variant(variant)
        key = task_datasets_key(task, self.variants[name]["kind"])
        allowed = self.config["task_datasets"].get(key, [])
        if dataset is None:
            if not allowed:
                raise PlanError(f"task_datasets.{key}", f"no dataset for task {key} at scale {self.scale}")
            return allowed[0]
        if dataset not in allowed:
            raise PlanError(f"task_datasets.{key}", f"run {task}/{variant}: dataset {dataset!r} is not one of {allowed}")
        return dataset

    def manifest_dir(self, dataset: str) -> str:
        """The folder the jobs of `dataset` read: its manifest, or with `datasets.<name>.media: prepared`
        the shards `avfusion data cache` made of it (`<dataset>-prepared`, rule cache_dataset)."""
        media = self.config["datasets"].get(dataset, {}).get("media", "raw")
        return self.source_manifest_dir(dataset) + ("-prepared" if media == "prepared" else "")

    def source_manifest_dir(self, dataset: str) -> str:
        """The folder make-tuxav / data prepare writes for `dataset` (its raw media)."""
        return f"{self.config['data_dir']}/{self.scale}/{dataset}"

    def cache_arguments(self, dataset: str) -> str:
        """`avfusion data cache` options of `datasets.<name>.cache` (workers default 1)."""
        options = {"workers": 1, **self.config["datasets"][dataset].get("cache", {})}
        return " ".join(f"--{key.replace('_', '-')} {value if isinstance(value, str) else int(value)}"
                        for key, value in sorted(options.items()))

    def needs_unimodal_runs(self, name: str) -> bool:
        spec = self.variants[name]
        return spec["kind"] == "avmae" and spec.get("unimodal_init", True) and not self.config["unimodal_init"]["image"]

    def released_checkpoint(self, name: str) -> str:
        """The released checkpoint file of variant `name` (kind released); empty -> a config error."""
        key = self.variants[name]["released"]
        path = self.config.get("released_checkpoints", {}).get(key, "")
        if not path:
            raise PlanError(f"released_checkpoints.{key}", "empty; give the released checkpoint_latest.pth "
                            f"(README \"Released checkpoints\") to run variant {name}")
        return path

    # -- model sections
    def preset_name(self, template: str) -> str:
        return template.replace("{size}", self.config["preset_size"])

    def model_section(self, name: str) -> dict:
        """The `model:` section of every job of variant `name` (presets resolved and validated here)."""
        from .models.presets import fusion_layers
        from .models.registry import model_config

        spec = self.variants[name]
        section = copy.deepcopy(spec["model"])
        section["preset"] = self.preset_name(section["preset"])
        # the scale's `model_overrides` (e.g. tiny: image patch 8), merged last into every variant's model
        section = deep_merge(section, self.config.get("model_overrides") or {})
        overrides = {k: v for k, v in section.items() if k != "preset"}
        try:
            full = model_config(section["preset"], overrides)
        except (KeyError, ValueError) as err:
            where = "model_overrides" if self.config.get("model_overrides") else f"variants.{name}.model"
            raise PlanError(where, f"{err}".strip("'\"") + f" (variant {name})") from None
        if "fusion_layers_of_12" in spec:
            layers = fusion_layers(spec["fusion_layers_of_12"], full["depth"])
            section = deep_merge(section, {"fusion": {"layers": layers}})
        return section

    def sop_section(self, name: str) -> dict:
        from .models.registry import model_config

        try:
            full = model_config(self.preset_name(self.variants[name]["sop_preset"]))
        except (KeyError, ValueError) as err:
            raise PlanError(f"variants.{name}.sop_preset", str(err)) from None
        return {k: v for k, v in full.items() if k != "family"}

    # -- one job
    def job_config(self, task: str, variant: str) -> dict:
        """The full config file of one job (what `avfusion <task> --config` reads)."""
        name, _ = split_variant(variant)
        seed = self.split_seed(variant)[1]
        spec = self.variants[name]
        kind = spec["kind"]
        section = "classical-separation" if kind == "classical" else task
        cfg = deep_merge(self.config["tasks"].get(section, {}), {"seed": seed, "scale": self.scale})
        if task != "efficiency":
            dataset = self.dataset_of(task, variant)
            # per-dataset overrides of the task's section (datasets.<d>.tasks.<task>: e.g. AVSS num_classes 71)
            cfg = deep_merge(cfg, self.config["datasets"][dataset].get("tasks", {}).get(section, {}))
            cfg = deep_merge(cfg, {"data": {"manifest": self.manifest_dir(dataset)}})
        if kind in ("avmae", "unimodal", "released", "efficiency"):
            cfg["model"] = self.model_section(name)
        if kind == "supervised":
            cfg["sop"] = self.sop_section(name)
        if task == "pretrain" and kind == "avmae":
            if spec.get("unimodal_init", True):
                init = self.config["unimodal_init"]
                if init["image"]:
                    cfg["init"] = {"image": init["image"], "audio": init["audio"]}
                else:
                    cfg["init"] = {"image": self.pretrain_run("mae_image", seed),
                                   "audio": self.pretrain_run("mae_audio", seed)}
        elif task == "pretrain" and kind == "unimodal" and not self.config["unimodal_init"]["image"]:
            # our own unimodal inits (tiny/smoke): the scale's `unimodal_pretrain` overrides tasks.pretrain
            cfg = deep_merge(cfg, self.config.get("unimodal_pretrain", {}))
        elif task == "pretrain" and kind == "unimodal":
            # weight files given (paper scale): Table 3's MAE / AudioMAE rows are the public weights, imported
            from .models.registry import model_config

            modality = model_config(cfg["model"]["preset"]).get("modality", "image")
            cfg["init"] = {modality: self.config["unimodal_init"][modality]}
            cfg["import_only"] = True
        elif kind in ("avmae", "unimodal") and task not in ("pretrain", "efficiency"):
            cfg["init"] = {"checkpoint": self.pretrain_run(name, seed)}
        elif kind == "released" and task != "efficiency":
            cfg["init"] = {"checkpoint": self.released_checkpoint(name)}
        cfg = deep_merge(cfg, spec.get(section, {}))
        self.check_job(section, variant, cfg)
        return cfg

    def job_resources(self, task: str) -> dict:
        res = deep_merge(self.config["resources"]["default"], self.config["resources"].get(task, {}))
        res.setdefault("partition", self.config.get("slurm_partition", ""))
        res.setdefault("account", self.config.get("slurm_account", ""))
        return res

    def job_ranks(self, task: str) -> int:
        """Ranks of one job: nodes x tasks_per_node (0 = one per GPU, at least 1); avfusion.launch.Resources."""
        res = self.job_resources(task)
        return res.get("nodes", 1) * (res.get("tasks_per_node", 0) or max(1, res["gpus"]))

    def job_threads(self, task: str) -> int:
        """Snakemake cores a job holds: its CPUs (x ranks) when it runs here, 1 when it waits on SLURM."""
        return 1 if self.executor == "slurm" else self.job_resources(task)["cpus"] * self.job_ranks(task)

    def launch_args(self, task: str, variant: str, command: str | None = None) -> str:
        """`avfusion.launch` arguments but --config and --out for run folder <task>/<variant>; `command` =
        the avfusion command when it differs from the folder's task (classical-separation writes separation/<variant>)."""
        command = command or task
        args = ["--executor", self.executor, "--task", command, "--job-name", f"avf-{self.scale}-{task}-{variant}"]
        for key, value in self.job_resources(command).items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        return " ".join(shlex.quote(a) for a in args)

    def check_job(self, command: str, variant: str, cfg: dict) -> None:
        """Validate a job's config against its task's own Config class, as the job will read it: a bad
        key in `tasks.<task>` or `variants.<name>.<task>` fails when the Snakefile is parsed."""
        from .config import ConfigError

        key = (command, json.dumps(cfg, sort_keys=True, default=str))
        if key in self._checked_jobs:
            return
        try:
            check_job_config(command, cfg)
        except ConfigError as err:
            name = split_variant(variant)[0]
            where = f"tasks.{command}" + (f" or variants.{name}.{command}" if command in self.variants[name] else "")
            raise PlanError(where, f"job {command}/{variant}: {err}") from None
        self._checked_jobs[key] = True

    # -- checks before any job
    def check(self) -> None:
        """Everything that can be checked before a job runs (variants, datasets, init, SLURM)."""
        for section in ("task_datasets", "resources", "tasks"):
            for key in self.config[section]:
                if key not in TASKS and not (section == "resources" and key == "default"):
                    raise PlanError(f"{section}.{key}", f"not a task; tasks are {list(TASKS)}")
        for name, spec in self.variants.items():
            if spec["kind"] in ("avmae", "unimodal", "released", "efficiency"):
                self.model_section(name)
            if spec["kind"] == "supervised":
                self.sop_section(name)
            for task in TASKS:
                if task in spec and task not in self.config["tasks"]:
                    raise PlanError(f"variants.{name}.{task}", f"no task {task!r} in the config's tasks")
        for task, names in self.config["task_datasets"].items():
            for dataset in names:
                if dataset not in self.config["datasets"]:
                    raise PlanError(f"task_datasets.{task}",
                                    f"dataset {dataset!r} is not in datasets ({sorted(self.config['datasets'])})")
        for dataset, spec in self.config["datasets"].items():
            if spec["source"] == "tuxav" and self.scale not in ("smoke", "tiny"):
                raise PlanError(f"datasets.{dataset}.source", f"tuxav exists at scales smoke and tiny, not {self.scale}")
            if spec["source"] == "prepare" and "name" not in spec:
                raise PlanError(f"datasets.{dataset}.name", "missing: the `avfusion data prepare` dataset key")
            for key in ("background", "background_contrast", "stamps_per_class"):
                if spec["source"] != "tuxav" and key in spec:
                    raise PlanError(f"datasets.{dataset}.{key}", "only for source tuxav (make-tuxav's option)")
            if spec.get("background") == "plain" and "background_contrast" in spec:
                raise PlanError(f"datasets.{dataset}.background_contrast", "scales drawn backgrounds only; this "
                                "dataset's background is plain (drop the key, or set background: drawn)")
        for name, spec in self.variants.items():  # every job config of the DAG, validated by its task's Config
            tasks = {"avmae": RUN_TASKS, "unimodal": RUN_TASKS, "supervised": ["separation"],
                     "classical": ["separation"], "efficiency": ["efficiency"]}.get(spec["kind"], [])
            for task in tasks:
                if task == "efficiency" or self.config["task_datasets"].get(task_datasets_key(task, spec["kind"])):
                    self.job_config(task, name)
        if bool(self.config["unimodal_init"]["image"]) != bool(self.config["unimodal_init"]["audio"]):
            raise PlanError("unimodal_init", "give both image and audio weight files, or neither")
        if self.executor == "slurm":
            self._check_slurm()

    def _check_slurm(self) -> None:
        if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
            raise PlanError("executor", "slurm: sbatch/sinfo are not on PATH")
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30)
        if sinfo.returncode != 0:
            raise PlanError("executor", f"slurm: sinfo failed, is the cluster up and SLURM_CONF set? {sinfo.stderr.strip()}")
        partitions = set(sinfo.stdout.split())
        for task in TASKS:
            partition = self.job_resources(task)["partition"]
            if partition and partition not in partitions:
                key = (f"resources.{task}.partition" if self.config["resources"].get(task, {}).get("partition")
                       else "slurm_partition")
                raise PlanError(key, f"SLURM partition {partition!r} does not exist; the cluster has {sorted(partitions)}")
