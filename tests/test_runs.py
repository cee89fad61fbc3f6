"""avfusion/runs.py: the run-folder rule, the task list the CLI and the report share, the DAG config's
task keys, and the tables.yaml schema."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from avfusion.config import ConfigError
from avfusion.runs import (DOWNSTREAM_TASKS, RUN_TASKS, TASKS, Plan, PlanError, seed_folder, split_seed,
                           split_variant, variant_folder)

REPO = Path(__file__).resolve().parents[1]


def _config(scale: str = "tiny", **changes) -> dict:
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "workflow/config/default.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / f"workflow/config/scales/{scale}.yaml").read_text()))
    update_config(config, {"scale": scale, "experiments": str(REPO / "workflow/config/experiments.yaml"), **changes})
    return config


def test_run_folder_is_variant_then_dataset_then_seed():
    assert variant_folder("late_fusion", None, "tuxav") == "late_fusion"
    assert variant_folder("late_fusion", "tuxav", "tuxav") == "late_fusion"
    assert variant_folder("late_fusion", "avss_mini", "tuxav") == "late_fusion@avss_mini"
    assert seed_folder(2, [0, 1, 2]) == "/seed2" and seed_folder(0, [0]) == ""
    assert split_variant("late_fusion@avss_mini/seed1") == ("late_fusion", "avss_mini")
    assert split_seed("late_fusion@avss_mini/seed1", [0, 1]) == ("late_fusion@avss_mini", 1)
    assert split_seed("late_fusion", [3, 4]) == ("late_fusion", 3)


def test_one_task_list_for_the_dag_the_cli_and_the_report():
    from avfusion.cli import COMMANDS
    from avfusion.report.tables import TASKS as REPORT_TASKS

    assert set(TASKS) <= set(COMMANDS) and all(COMMANDS[t] == TASKS[t] for t in TASKS)
    assert REPORT_TASKS == RUN_TASKS == ("pretrain", *DOWNSTREAM_TASKS)
    assert set(yaml.safe_load((REPO / "workflow/config/default.yaml").read_text())["tasks"]) == set(TASKS)


def test_plan_writes_each_seed_its_own_job_from_the_shared_unimodal_init():
    config = _config("tiny", results="R")
    plan = Plan(config)
    plan.check()
    assert plan.seeds == [0, 1, 2]
    job = plan.job_config("linprobe", "late_fusion/seed1")
    assert job["seed"] == 1 and job["init"] == {"checkpoint": "R/runs/tiny/pretrain/late_fusion/seed1"}
    assert job["model"] == {"preset": f"late-fusion-{config['preset_size']}"}
    pre = plan.job_config("pretrain", "late_fusion/seed2")
    assert pre["init"] == {"image": "R/runs/tiny/pretrain/mae_image", "audio": "R/runs/tiny/pretrain/mae_audio"}


def test_unimodal_pretrain_overrides_only_our_own_unimodal_inits():
    config = _config("tiny", results="R")
    plan = Plan(config)
    base = config["tasks"]["pretrain"]["optim"]
    init = plan.job_config("pretrain", "mae_audio")
    assert init["optim"]["epochs"] == config["unimodal_pretrain"]["optim"]["epochs"] == 64
    assert init["optim"]["batch_size"] == base["batch_size"] and init["optim"]["blr"] == base["blr"]
    assert init["knn"]["every"] == 8 and init["knn"]["batch_size"] == config["tasks"]["pretrain"]["knn"]["batch_size"]
    assert plan.job_config("pretrain", "mae_image")["optim"] == init["optim"]
    assert plan.job_config("pretrain", "deepavfusion/seed0")["optim"] == base   # the AV-MAE stage keeps its budget
    files = Plan(_config("tiny", results="R", unimodal_init={"image": "/w/mae.pth", "audio": "/w/audiomae.pth"}))
    imported = files.job_config("pretrain", "mae_audio")   # weight files given: imported, not trained
    assert imported["import_only"] and imported["optim"] == base


def test_model_overrides_reach_every_variant_and_a_bad_key_is_named():
    from avfusion.models.registry import model_config

    plan = Plan(_config("smoke", results="R", model_overrides={"image": {"patch_size": 8}}))
    for task, variant in [("pretrain", "mae_image"), ("pretrain", "deepavfusion"), ("pretrain", "late_fusion"),
                          ("linprobe", "deepavfusion")]:
        section = plan.job_config(task, variant)["model"]
        assert section["image"] == {"patch_size": 8}
        assert model_config(section["preset"], {k: v for k, v in section.items() if k != "preset"})["image"]["patch_size"] == 8
    assert "image" not in Plan(_config("smoke", results="R")).job_config("pretrain", "deepavfusion")["model"]
    with pytest.raises(PlanError, match=r"config error at 'model_overrides'.*patch_siz"):
        Plan(_config("smoke", results="R", model_overrides={"image": {"patch_siz": 8}})).job_config("pretrain", "deepavfusion")


@pytest.mark.parametrize("section", ["tasks", "resources", "task_datasets"])
def test_a_task_key_that_is_not_a_task_is_named(section):
    value = {"cpus": 1} if section == "resources" else ({} if section == "tasks" else ["tuxav"])
    config = _config("smoke")
    config[section]["linprob"] = value
    with pytest.raises(PlanError, match=rf"config error at '{section}.linprob': not a task"):
        Plan(config).check()


def test_tables_yaml_is_validated_by_its_schema_naming_the_key(tmp_path):
    from avfusion.report.tables import load_tables_config

    cfg = load_tables_config(REPO / "workflow/config/tables.yaml")
    assert "table4" in cfg["tables"]
    data = yaml.safe_load((REPO / "workflow/config/tables.yaml").read_text())
    data["tables"]["table4"]["columns"]["linear"]["metirc"] = "acc_all"
    bad = tmp_path / "tables.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"tables\.table[0-9]+\.columns\.linear: .*'metirc'"):  # table4's columns are a YAML anchor
        load_tables_config(bad)


def test_background_contrast_with_a_plain_background_is_named():
    config = _config("smoke")
    config["datasets"]["tuxav"] = {"source": "tuxav", "background": "plain", "background_contrast": 0.25}
    with pytest.raises(PlanError, match=r"config error at 'datasets.tuxav.background_contrast': scales drawn"):
        Plan(config).check()


@pytest.mark.parametrize("key, value", [("background", "plain"), ("background_contrast", 0.25), ("stamps_per_class", 1)])
def test_make_tuxav_options_on_another_source_are_named(key, value):
    """The tuxav generator's options (`datasets.<name>.background_contrast`, `.stamps_per_class`) on a dataset
    of another source are refused naming the key, not silently ignored."""
    config = _config("smoke")
    config["datasets"]["vggsound"] = {"source": "prepare", "name": "vggsound", key: value}
    with pytest.raises(PlanError, match=rf"config error at 'datasets.vggsound.{key}': only for source tuxav"):
        Plan(config).check()
