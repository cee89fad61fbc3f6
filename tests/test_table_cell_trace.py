"""A newcomer's trace of one table cell: Table 4, late fusion, linear probe, from results/table4.csv to the
model, in six files (README "Reading the code"):

    results/table4.csv                                   the cell's `run` column names its run folder
    results/runs/<scale>/linprobe/late_fusion/metrics.json  `provenance.task` = the task module,
                                                         `config.model.preset`, `config.init.checkpoint`
    avfusion/tasks/linprobe.py                           `run` builds its encoder with one call, build_encoder
    avfusion/models/registry.py                          build_encoder: preset -> family -> encoder factory
    avfusion/models/presets.py                           the preset (late fusion: dense block at the last layer)
    avfusion/models/encoder.py                           DeepAVFusionEncoder

The smoke run here is made as the DAG makes it (runs.Plan's job config, written by avfusion.jobconfig, run
by `avfusion linprobe`, tabled by `avfusion report tables`); its pretraining run folder holds a checkpoint
saved from a seeded encoder (the trace is about the code path, not about training). Each hop is read from
the file before it: the CSV row gives the run, the run's metrics.json the task module and the model, the
task module's source the builder it calls, the builder's module the preset table and the encoder class.
"""
from __future__ import annotations

import ast
import csv
import importlib
import importlib.util
import inspect
import json
import os
from pathlib import Path

import torch
import yaml

from avfusion.cli import main as cli_main
from avfusion.jobconfig import write_job_config
from avfusion.runs import Plan

REPO = Path(__file__).resolve().parents[1]


def _smoke_plan(tmp_path: Path, tuxav_smoke: Path) -> Plan:
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "workflow/config/default.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "workflow/config/scales/smoke.yaml").read_text()))
    update_config(config, {"scale": "smoke", "results": str(tmp_path / "results"), "data_dir": str(tmp_path / "data"),
                           "experiments": str(REPO / "workflow/config/experiments.yaml")})
    (tmp_path / "data" / "smoke").mkdir(parents=True)
    os.symlink(tuxav_smoke, tmp_path / "data" / "smoke" / "tuxav")
    return Plan(config)


def _module_file(module: str) -> Path:
    return Path(importlib.util.find_spec(module).origin)


def _defining_module(module: str, name: str) -> str:
    """The module whose code defines `name` as `module` sees it (following `from X import name`)."""
    path = _module_file(module)
    package = module.rpartition(".")[0]
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and any(a.name == name and a.asname is None for a in node.names):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            return _defining_module(base, name)
    return module


def _calls_in(path: Path, function: str) -> set[str]:
    tree = ast.parse(path.read_text())
    body = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    return {n.func.id for n in ast.walk(body) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def follow_the_cell(table_csv: Path, variant: str, task: str) -> tuple[list[Path], torch.nn.Module, dict]:
    """Follow one cell from the table to the model; -> (files opened, in order), the encoder, the run's metrics.json."""
    visited = [table_csv]
    with open(table_csv, newline="") as fh:
        cell = next(r for r in csv.DictReader(fh) if r["variant"] == variant and r["task"] == task)
    run = Path(cell["run"])                                        # hop 1: the cell names its run
    visited.append(run)
    payload = json.loads(run.read_text())
    task_module = payload["provenance"]["task"]                    # hop 2: the run names its code and model
    visited.append(_module_file(task_module))
    assert "build_encoder" in _calls_in(visited[-1], "run")        # hop 3: the task's one call
    builder_module = _defining_module(task_module, "build_encoder")
    visited.append(_module_file(builder_module))
    preset_module = _defining_module(builder_module, "PRESETS")    # hop 4: the builder's preset table
    visited.append(_module_file(preset_module))
    model, init, data = payload["config"]["model"], payload["config"]["init"], payload["config"]["data"]
    assert model["preset"] in importlib.import_module(preset_module).PRESETS
    build_encoder = getattr(importlib.import_module(builder_module), "build_encoder")
    encoder = build_encoder(model, init["checkpoint"], data["image_size"], freeze=True)
    visited.append(Path(inspect.getsourcefile(type(encoder))))     # hop 5: the encoder's class
    return visited, encoder, payload


def test_table4_late_fusion_linear_probe_cell_reaches_the_model_in_six_files(tmp_path, tuxav_smoke):
    from avfusion.models.registry import build_encoder, family_entry

    plan = _smoke_plan(tmp_path, tuxav_smoke)
    # the pretraining run the linear probe starts from: a checkpoint of a seeded late-fusion encoder
    pretrain_run = Path(plan.pretrain_run("late_fusion", 0))
    torch.manual_seed(5)
    source = build_encoder(plan.model_section("late_fusion"))
    (pretrain_run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in source.state_dict().items()}},
               pretrain_run / "checkpoints" / "checkpoint_latest.pth")
    # the linear-probe job of Table 4's late-fusion row, as the Snakefile writes and runs it
    run_dir = Path(plan.run_dir("linprobe", "late_fusion"))
    job = plan.job_config("linprobe", "late_fusion")
    job = {**job, "device": "cpu", "optim": {**job.get("optim", {}), "epochs": 1}}
    write_job_config(run_dir, job)
    assert cli_main(["linprobe", "--config", str(run_dir / "job_config.yaml"), "--out", str(run_dir)]) == 0
    results = tmp_path / "results"
    assert cli_main(["report", "tables", "--tables", str(REPO / "workflow/config/tables.yaml"),
                     "--runs", str(results / "runs" / "smoke"), "--out", str(results), "--scale", "smoke"]) == 0

    visited, encoder, payload = follow_the_cell(results / "table4.csv", "late_fusion", "linprobe")

    def rel(p: Path) -> str:
        p = Path(p).resolve()
        return str(p.relative_to(tmp_path.resolve() if p.is_relative_to(tmp_path.resolve()) else REPO))

    assert [rel(p) for p in visited] == [
        "results/table4.csv",
        "results/runs/smoke/linprobe/late_fusion/metrics.json",
        "avfusion/tasks/linprobe.py",
        "avfusion/models/registry.py",
        "avfusion/models/presets.py",
        "avfusion/models/encoder.py",
    ]
    # the family's encoder factory sits in the builder's file: registry.py -> encoder.py is one hop
    assert inspect.getsourcefile(family_entry("deepavfusion").encoder) == str(visited[3])
    # the model at the end is the cell's: late fusion (dense block at the last of 2 layers), the pretrained weights
    assert payload["config"]["model"]["preset"] == "late-fusion-smoke"
    assert encoder.fusion_layers == [1] and type(encoder).__name__ == "DeepAVFusionEncoder"
    for (name, a), b in zip(source.state_dict().items(), encoder.state_dict().values()):
        assert torch.equal(a, b), name
    with open(visited[0], newline="") as fh:
        cell = next(r for r in csv.DictReader(fh) if r["variant"] == "late_fusion" and r["task"] == "linprobe")
    assert cell["status"] == "ok" and float(cell["ours"]) == round(payload["metrics"]["acc_all"], 4)   # CSV: 4 decimals
