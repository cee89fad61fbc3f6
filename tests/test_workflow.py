"""The Snakemake DAG: it plans every run of every variant at every scale, writes valid per-job
configs, and refuses a bad config or profile value before any job starts, naming the key.
(The real smoke slice through SLURM is tests/test_workflow_slurm.py.)
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
EXPERIMENTS = yaml.safe_load((REPO / "workflow/config/experiments.yaml").read_text())["variants"]
DOWNSTREAM = ["linprobe", "finetune", "separation", "segmentation", "localization", "efficiency"]
TABLE_VARIANTS = ["deepavfusion", "no_unimodal_init", "token_fusion", "dense", "mid_fusion", "late_fusion",
                  "no_fusion", "fusion_layers_9", "fusion_layers_6", "fusion_layers_3", "fusion_layers_1",
                  "fusion_tokens_1", "fusion_tokens_8", "fusion_tokens_32", "aggr_tokens_4", "aggr_tokens_16",
                  "cav_mae", "av_mae_late", "mae_image", "mae_audio", "nmf", "rpca", "sound_of_pixels",
                  "dense_fast"]  # Table 5's extra row: dense timed with our exact fast computation


def snakemake(*args, cwd=REPO, timeout=180, env=None):
    env = dict(os.environ, **(env or {}))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def scale_seeds(scale: str) -> list[int]:
    scale_cfg = yaml.safe_load((REPO / f"workflow/config/scales/{scale}.yaml").read_text())
    return scale_cfg.get("seeds") or [0]


def every_run(tmp_path: Path, scale: str, extra_datasets: dict[str, list[str]] | None = None) -> list[str]:
    """Every run folder's metrics.json: one per seed (.../seed<k>) when the scale runs several seeds,
    except the pretraining of `shared_pretrain` variants (the unimodal inits, pretrained once)."""
    runs = []
    seeds = scale_seeds(scale)
    for name, spec in EXPERIMENTS.items():
        kind = spec["kind"]
        if kind == "released":   # not part of `all`: tests/test_released.py
            continue
        tasks = {"classical": ["separation"], "supervised": ["separation"],
                 "efficiency": ["efficiency"]}.get(kind, ["pretrain", *DOWNSTREAM])
        for task in tasks:
            once = len(seeds) == 1 or (task == "pretrain" and spec.get("shared_pretrain"))
            suffixes = [""] if once else [f"/seed{k}" for k in seeds]
            for suffix in suffixes:
                runs.append(f"{tmp_path}/runs/{scale}/{task}/{name}{suffix}/metrics.json")
                for dataset in (extra_datasets or {}).get(task, []):
                    if task != "pretrain":
                        runs.append(f"{tmp_path}/runs/{scale}/{task}/{name}@{dataset}{suffix}/metrics.json")
    return runs


def assert_plans_every_table(stdout: str, results: Path) -> None:
    outputs = set(re.findall(r"^    output: (.+)$", stdout, re.M))
    planned = {p.strip() for line in outputs for p in line.split(",")}
    expected = {f"{results}/table{i}.{ext}" for i in range(1, 8) for ext in ("csv", "md")}
    expected |= {f"{results}/figure3.png", f"{results}/claims.md"}
    assert expected <= planned, sorted(expected - planned)


def test_experiments_name_every_variant_of_tables_3_to_7_once():
    # (issue 18: the two `released` variants start from the released checkpoint files; no table row)
    assert sorted(n for n, s in EXPERIMENTS.items() if s["kind"] != "released") == sorted(TABLE_VARIANTS)
    assert {n: s["released"] for n, s in EXPERIMENTS.items() if s["kind"] == "released"} == {
        "released_vggsound": "vggsound", "released_audioset": "audioset"}
    assert EXPERIMENTS["av_mae_late"] == {"kind": "alias", "alias_of": "late_fusion"}


@pytest.mark.parametrize("scale", ["smoke", "tiny"])
def test_dry_run_plans_every_run_of_every_variant(tmp_path, scale):
    out = snakemake("-n", "--cores", "2", "--config", f"scale={scale}", f"results={tmp_path}",
                    f"data_dir={tmp_path}/data", "--", "all", *every_run(tmp_path, scale))
    assert out.returncode == 0, out.stderr[-3000:]
    assert_plans_every_table(out.stdout, tmp_path)
    # Table 6a's 9 and 6 of 12 fusion layers are all the layers of the depth-2 / depth-4 models, i.e. the
    # deepavfusion model itself: run once, as aliases of it (Plan._alias_same_models; issue 15, on purpose)
    same_model = {"fusion_layers_9", "fusion_layers_6"}
    trained = [n for n, s in EXPERIMENTS.items() if s["kind"] in ("avmae", "unimodal") and n not in same_model]
    shared = [n for n in trained if EXPERIMENTS[n].get("shared_pretrain")]
    assert sorted(shared) == ["mae_audio", "mae_image"]
    counts = job_counts(out.stdout)
    n_seeds = len(scale_seeds(scale))          # smoke 1, tiny 3 (issue 15: claims over seeds)
    assert n_seeds == {"smoke": 1, "tiny": 3}[scale]
    # the unimodal inits are pretrained once and shared by every seed
    assert counts["pretrain"] == (len(trained) - len(shared)) * n_seeds + len(shared) and len(trained) == 15
    # 15 trained variants x 6 tasks + Sound of Pixels (separation only) + dense_fast (efficiency only), per seed
    assert counts["downstream"] == (len(trained) * len(DOWNSTREAM) + 2) * n_seeds
    assert counts["classical_separation"] == 2 * n_seeds and counts["make_tuxav"] == 1
    # av_mae_late's and fusion_layers_1's runs copy late_fusion's, fusion_layers_3's copy mid_fusion's (issue 17),
    # fusion_layers_9's and fusion_layers_6's copy deepavfusion's (the same model at this depth)
    assert counts["alias_run"] == 5 * (1 + len(DOWNSTREAM)) * n_seeds


def test_paper_dry_run_plans_official_datasets_with_fake_roots(tmp_path):
    roots = {"datasets": {d: {"source": "prepare", "name": d, "root": f"/nonexistent/{d}"} for d in
                          ["vggsound", "vggsound_music", "vggsound_instruments", "music_solo", "avsbench_s4",
                           "avsbench_avss", "flickr_soundnet"]},
             "unimodal_init": {"image": "/nonexistent/mae_pretrain_vit_base.pth",
                               "audio": "/nonexistent/audiomae_pretrained.pth"}}
    paths = tmp_path / "paths.yaml"
    paths.write_text(yaml.safe_dump(roots))
    extra = {"linprobe": ["vggsound_music"], "finetune": ["vggsound_music"], "segmentation": ["avsbench_s4"],
             "separation": ["music_solo", "vggsound_instruments"]}
    out = snakemake("-n", "--cores", "2", "--configfile", str(paths), "--config", "scale=paper",
                    f"results={tmp_path}", f"data_dir={tmp_path}/data", "--", "all",
                    *every_run(tmp_path, "paper", extra))
    assert out.returncode == 0, out.stderr[-3000:]
    assert_plans_every_table(out.stdout, tmp_path)
    counts = job_counts(out.stdout)
    assert counts["prepare_dataset"] == 7
    # MAE / AudioMAE files are imported: the unimodal runs are only the Table 3 baselines, no extra init runs
    assert counts["pretrain"] == 17
    assert "avfusion data prepare vggsound_music" not in out.stdout  # a dry run prints plans, runs nothing
    assert not (tmp_path / "runs").exists()


def test_job_configs_map_fusion_layers_and_init(tmp_path):
    """The per-job configs that the rules write, built by the Snakefile's own functions."""
    namespace = _common_namespace("tiny", tmp_path)
    job_config = namespace["job_config"]
    # one rule for "k of 12 fusion layers" (issue 17): the last min(k, depth) layers; depth 4 at tiny.
    # Table 6a's "3" / "1" rows are Table 4's mid / late models (aliases), as the paper reports them.
    # 9 and 6 of 12 -> all 4 layers = the deepavfusion model: run once, as aliases of it (issue 15, on purpose)
    assert namespace["PLAN"].same_model_as == {"fusion_layers_9": "deepavfusion", "fusion_layers_6": "deepavfusion"}
    assert namespace["VARIANTS"]["fusion_layers_9"] == {"kind": "alias", "alias_of": "deepavfusion"}
    assert EXPERIMENTS["fusion_layers_3"] == {"kind": "alias", "alias_of": "mid_fusion"}
    assert EXPERIMENTS["fusion_layers_1"] == {"kind": "alias", "alias_of": "late_fusion"}
    assert job_config("pretrain", "mid_fusion")["model"] == {"preset": "mid-fusion-lite"}   # tiny: lite models (issue 15)
    assert job_config("pretrain", "deepavfusion")["init"] == {
        "image": f"{tmp_path}/runs/tiny/pretrain/mae_image", "audio": f"{tmp_path}/runs/tiny/pretrain/mae_audio"}
    assert "init" not in job_config("pretrain", "no_unimodal_init")
    lin = job_config("linprobe", "mae_image")
    assert lin["model"] == {"preset": "mae-image-lite"} and lin["heads"] == ["image"]   # tiny scale: lite models (issue 15)
    assert lin["init"] == {"checkpoint": f"{tmp_path}/runs/tiny/pretrain/mae_image"}
    assert lin["data"]["manifest"] == f"{tmp_path}/data/tiny/tuxav"
    sop = job_config("separation", "sound_of_pixels")
    assert sop["method"] == "sound_of_pixels" and sop["sop"]["unet_ngf"] == 16 and "model" not in sop
    assert job_config("separation", "nmf")["method"] == "nmf"
    # every job config loads as its task's Config (recipes included), at both small scales
    import importlib

    from avfusion.tasks.common import load_job_config
    for scale in ("smoke", "tiny"):
        job_config = _common_namespace(scale, tmp_path)["job_config"]
        for task, variant in [("pretrain", "deepavfusion"), ("pretrain", "mae_audio"), ("linprobe", "cav_mae"),
                              ("finetune", "deepavfusion"), ("finetune", "mae_image"), ("separation", "sound_of_pixels"),
                              ("separation", "deepavfusion"), ("segmentation", "token_fusion"),
                              ("localization", "no_fusion"), ("efficiency", "dense"), ("separation", "rpca")]:
            name = "baselines.classical_separation" if variant == "rpca" else f"avfusion.tasks.{task}"
            module = importlib.import_module(name)
            path = tmp_path / f"{scale}-{task}-{variant}.yaml"
            path.write_text(yaml.safe_dump(job_config(task, variant)))
            load_job_config(module.Config, [str(path)], [], getattr(module, "RECIPES", None))


def test_seeds_from_the_command_line_and_the_seed_folders(tmp_path):
    """`--config seeds=[0]` arrives as ['0']: read as [0] (one seed, plain folders); 3 seeds: /seed<k>."""
    one = _common_namespace("tiny", tmp_path, {"seeds": ["0"]})
    assert one["SEEDS"] == [0] and one["job_config"]("linprobe", "deepavfusion")["init"] == {
        "checkpoint": f"{tmp_path}/runs/tiny/pretrain/deepavfusion"}
    three = _common_namespace("tiny", tmp_path)
    assert three["SEEDS"] == [0, 1, 2]
    cfg = three["job_config"]("linprobe", "deepavfusion/seed2")
    assert cfg["seed"] == 2 and cfg["init"] == {"checkpoint": f"{tmp_path}/runs/tiny/pretrain/deepavfusion/seed2"}
    pre = three["job_config"]("pretrain", "token_fusion/seed1")      # the shared unimodal inits: no seed level
    assert pre["seed"] == 1 and pre["init"] == {"image": f"{tmp_path}/runs/tiny/pretrain/mae_image",
                                                "audio": f"{tmp_path}/runs/tiny/pretrain/mae_audio"}
    assert three["job_config"]("finetune", "mae_audio/seed1")["init"] == {"checkpoint": f"{tmp_path}/runs/tiny/pretrain/mae_audio"}


def _common_namespace(scale: str, results: Path, extra: dict | None = None) -> dict:
    """Execute workflow/rules/common.smk's Python with the merged config (as the Snakefile does)."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "workflow/config/default.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / f"workflow/config/scales/{scale}.yaml").read_text()))
    update_config(config, {"scale": scale, "results": str(results), "data_dir": f"{results}/data",
                           "experiments": str(REPO / "workflow/config/experiments.yaml"), **(extra or {})})

    path = REPO / "workflow/rules/common.smk"
    namespace = {"config": config, "workflow": None, "shell": None, "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("args, key", [
    (["--config", "scale=smoke", "executor=pbs"], "['executor']"),
    (["--config", "scale=smoke", "seed=zero"], "['seed']"),
])
def test_bad_config_value_fails_before_any_job_naming_the_key(tmp_path, args, key):
    out = snakemake("--cores", "1", *args, f"results={tmp_path}", "--", f"{tmp_path}/runs/smoke/pretrain/mae_image/metrics.json")
    assert out.returncode == 1
    assert "Error validating config file" in out.stderr and key in out.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_resource_and_bad_variant_are_named(tmp_path):
    out = snakemake("--cores", "1", "--config", "scale=huge", f"results={tmp_path}")
    assert out.returncode == 1 and "config error at 'scale': 'huge' is not one of smoke, tiny, rehearsal, paper" in out.stderr
    bad_res = tmp_path / "bad_resources.yaml"
    bad_res.write_text("resources:\n  pretrain: {cpus: 0}\n")
    out = snakemake("--cores", "1", "--configfile", str(bad_res), "--config", "scale=smoke", f"results={tmp_path}")
    assert out.returncode == 1 and "['resources']['pretrain']['cpus']" in out.stderr
    experiments = yaml.safe_load((REPO / "workflow/config/experiments.yaml").read_text())
    experiments["variants"]["dense"]["model"]["fusion"]["arch"] = "densest"
    bad_exp = tmp_path / "experiments.yaml"
    bad_exp.write_text(yaml.safe_dump(experiments))
    out = snakemake("--cores", "1", "--config", "scale=smoke", f"experiments={bad_exp}", f"results={tmp_path}")
    assert out.returncode == 1
    assert "config error at 'variants.dense.model'" in out.stderr and "densest" in out.stderr
    experiments["variants"]["dense"] = {"kind": "alias"}   # alias without alias_of: schema error
    bad_exp.write_text(yaml.safe_dump(experiments))
    out = snakemake("--cores", "1", "--config", "scale=smoke", f"experiments={bad_exp}", f"results={tmp_path}")
    assert out.returncode == 1 and "'alias_of' is a required property" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_profile_is_refused(tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text("cores: 2\ncorez: 3\n")
    out = snakemake("--profile", str(profile), "--config", "scale=smoke", f"results={tmp_path}")
    assert out.returncode != 0 and "unrecognized arguments: --corez=3" in out.stderr
    missing = snakemake("--profile", "no_such_profile", "--config", "scale=smoke", cwd=REPO)
    assert missing.returncode != 0 and "no_such_profile" in missing.stderr


@pytest.mark.parametrize("user_configfile", [False, True])
def test_slurm_profile_resolves_from_the_repo_root_and_selects_slurm(tmp_path, user_configfile):
    """`--profile slurm` finds workflow/profiles/slurm (root symlink) and selects the slurm executor also
    when the user adds a --configfile of their own (which replaces a profile's `configfiles:`); without
    SLURM's commands it stops at parse time, naming the executor key, before anything is submitted."""
    bin_dir = tmp_path / "bin"  # bash, sh, which but no sbatch / sinfo (snakemake() prepends the venv's bin)
    bin_dir.mkdir()
    for tool in ("bash", "sh", "which"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(bin_dir)}
    user = ["--configfile", str(tmp_path / "my_paths.yaml")] if user_configfile else []
    (tmp_path / "my_paths.yaml").write_text("seed: 0\n")
    out = snakemake("--profile", "slurm", "--config", "scale=smoke", f"results={tmp_path}", *user, "--",
                    f"{tmp_path}/runs/smoke/pretrain/mae_image/metrics.json", env=env)
    assert out.returncode == 1
    assert "config error at 'executor': slurm" in out.stderr
    assert not (tmp_path / "runs").exists()
    # the user's explicit executor still wins over the profile's
    local = snakemake("--profile", "slurm", "--config", "scale=smoke", f"results={tmp_path}", "executor=debug",
                      *user, "-n", "--", f"{tmp_path}/runs/smoke/pretrain/mae_image/metrics.json", env=env)
    assert local.returncode == 0, local.stderr[-2000:]


def test_changed_job_config_moves_the_old_run_aside(tmp_path):
    """A run folder whose checkpoint came from another config is never resumed with the new one."""
    from avfusion.jobconfig import run_job

    namespace = _common_namespace("smoke", tmp_path)
    commands: list[list[str]] = []
    launch = lambda argv: commands.append(argv) or 0  # noqa: E731  (record instead of running)
    run = tmp_path / "runs/smoke/pretrain/mae_image"
    cfg = namespace["job_config"]("pretrain", "mae_image")
    argv = shlex.split(namespace["launch_args"]("pretrain", "mae_image"))
    run_job(run, cfg, argv, launch=launch)
    (run / "checkpoints").mkdir()
    (run / "checkpoints/checkpoint_latest.pth").write_bytes(b"epoch 1 of the old config")
    run_job(run, cfg, argv, launch=launch)  # same config: resume in place
    assert list(tmp_path.glob("runs/smoke/pretrain/mae_image.replaced-*")) == []
    changed = namespace["deep_merge"](cfg, {"optim": {"epochs": 3}})
    run_job(run, changed, argv, launch=launch)
    (stale,) = tmp_path.glob("runs/smoke/pretrain/mae_image.replaced-*")
    assert (stale / "checkpoints/checkpoint_latest.pth").read_bytes() == b"epoch 1 of the old config"
    assert not (run / "checkpoints").exists()
    assert yaml.safe_load((run / "job_config.yaml").read_text())["optim"]["epochs"] == 3
    line = " ".join(commands[-1])
    assert len(commands) == 3 and line.startswith("--executor debug --task pretrain --job-name")
    assert line.endswith(f"--cpus 1 --gpus 0 --mem-gb 1 --time-min 10 --partition  --account  "
                         f"--config {run}/job_config.yaml --out {run}")


def test_finished_run_stays_until_its_replacement_has_finished(tmp_path):
    """A rerun of a finished run goes to <run>.next; a failure leaves <run> as it was, a success
    swaps the folders (the finished one moves to <run>.replaced-<time>) and keeps the job's log."""
    from avfusion.jobconfig import run_job

    run = tmp_path / "pretrain/x"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"metrics": {"loss": 1.0}}')
    (run / "launch.log").write_text("first run\n")

    def failing(argv):
        assert argv[-2:] == ["--out", str(run.with_name("x.next"))]
        return 1

    assert run_job(run, {"seed": 1}, ["--task", "pretrain"], run / "launch.log", launch=failing) == 1
    assert (run / "metrics.json").read_text() == '{"metrics": {"loss": 1.0}}'
    assert sorted(p.name for p in run.parent.iterdir()) == ["x", "x.next"]

    def finishing(argv):
        Path(argv[-1], "metrics.json").write_text('{"metrics": {"loss": 0.5}}')
        return 0

    assert run_job(run, {"seed": 2}, ["--task", "pretrain"], run / "launch.log", launch=finishing) == 0
    assert (run / "metrics.json").read_text() == '{"metrics": {"loss": 0.5}}'
    assert yaml.safe_load((run / "job_config.yaml").read_text()) == {"seed": 2}
    (old,) = run.parent.glob("x.replaced-*")        # the finished run, whole
    assert (old / "metrics.json").read_text() == '{"metrics": {"loss": 1.0}}'
    assert (run / "launch.log").read_text() == "first run\n"   # the log Snakemake appended to
    assert len(list(run.parent.glob("x.next.replaced-*"))) == 1   # the failed attempt's folder (seed 1)
    assert not run.with_name("x.next").exists()

def test_prepared_media_dataset_gets_a_cache_rule_and_its_jobs_read_the_shards(tmp_path, tuxav_smoke):
    """`datasets.<d>.media: prepared` puts `avfusion data cache` (rule cache_dataset) between the dataset's
    manifest and its jobs, which then read `<d>-prepared`; `datasets.<d>.cache` are its options (schema)."""
    from avfusion.data.prepared import PreparedMedia
    from avfusion.runs import Plan

    user = tmp_path / "prepared.yaml"
    user.write_text(yaml.safe_dump({"datasets": {"tuxav": {"source": "tuxav", "media": "prepared",
                                                          "cache": {"workers": 2, "clips_per_shard": 16}}}}))
    data, target = tmp_path / "data", f"{tmp_path}/runs/smoke/pretrain/mae_image/metrics.json"
    common = ["--configfile", str(user), "--config", "scale=smoke", f"results={tmp_path}", f"data_dir={data}"]
    out = snakemake("-n", "-p", "--cores", "2", *common, "--", target)
    assert out.returncode == 0, out.stderr[-3000:]
    assert job_counts(out.stdout) == {"make_tuxav": 1, "cache_dataset": 1, "pretrain": 1, "total": 3}
    assert (f"avfusion data cache --manifest {data}/smoke/tuxav --out {data}/smoke/tuxav-prepared "
            f"--clips-per-shard 16 --workers 2") in out.stdout
    assert f"input: {data}/smoke/tuxav-prepared/manifest.csv" in out.stdout  # the pretraining reads the shards
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"datasets": {"tuxav": {"source": "tuxav", "media": "prepared",
                                                         "cache": {"workers": 0}}}}))
    out = snakemake("-n", "--cores", "1", "--configfile", str(bad), *common[2:], "--", target)
    both = out.stdout + out.stderr
    assert out.returncode == 1 and "Error validating config file" in both and "workers" in both, both[-2000:]

    # the rule runs: the smoke benchmark's manifest is there, so only the cache is made
    shutil.copytree(tuxav_smoke, data / "smoke" / "tuxav")
    out = snakemake("--cores", "2", *common, "--", f"{data}/smoke/tuxav-prepared/manifest.csv")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "make_tuxav" not in out.stderr and "cache_dataset" in out.stderr
    assert PreparedMedia.exists(data / "smoke" / "tuxav-prepared")
    report = json.loads((data / "smoke" / "tuxav-prepared" / "prepared" / "report.json").read_text())
    assert (report["prepared"], report["unreadable"], report["shards"]) == (48, 0, 3)
    config = yaml.safe_load((REPO / "workflow/config/default.yaml").read_text())
    from snakemake.utils import update_config

    update_config(config, yaml.safe_load((REPO / "workflow/config/scales/smoke.yaml").read_text()))
    update_config(config, {"scale": "smoke", "data_dir": str(data), "results": str(tmp_path),
                           "experiments": str(REPO / "workflow/config/experiments.yaml"),
                           **yaml.safe_load(user.read_text())})
    assert Plan(config).job_config("pretrain", "mae_image")["data"]["manifest"] == f"{data}/smoke/tuxav-prepared"
