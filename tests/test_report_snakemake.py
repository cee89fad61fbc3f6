"""workflow/rules/report.smk builds every table, Figure 3 and claims.md at smoke scale from fixture
metrics.json files (a real snakemake run in a tmp folder), a table rule needs only its own runs,
and `snakemake --report` holds every table and figure."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from avfusion.report.tables import ScaleContext, load_tables_config, required_runs

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TABLES = [f"table{i}" for i in range(1, 8)]
FIGURES = ["figure3.png", "figures/table5_efficiency.png", "figures/table6_curves.png",
           "figures/separation_examples.png", "figures/segmentation_examples.png", "figures/localization_examples.png"]


def smoke_context() -> ScaleContext:
    smoke = yaml.safe_load((REPO / "workflow/config/scales/smoke.yaml").read_text())
    kinds = {n: s["kind"] for n, s in yaml.safe_load((REPO / "workflow/config/experiments.yaml").read_text())["variants"].items()}
    return ScaleContext("smoke", smoke["task_datasets"], kinds)


def write_fixture_runs(root: Path, paths: list[str]) -> None:
    """A metrics.json per run (every metric key the tables read; numbers vary per run) + knn.csv."""
    for i, rel in enumerate(sorted(paths)):
        value = 10.0 + i
        metrics = {key: value for key in ("acc_all", "dense_acc_all", "sdr", "sir", "sar", "miou", "fscore", "ciou_ap50",
                                          "clips_per_s", "peak_mem_gb")}
        # the floors (issue 15), below the model's numbers
        metrics.update(chance_acc_all=6.25, sdr_mix=0.25, allfg_miou=5.0, allbg_miou=4.0, allfg_fscore=5.0,
                       allbg_fscore=0.0, prior_ciou_ap50=3.0, shuffled_audio_ciou_ap50=value - 1)
        metrics.update(knn_acc_audio=20.0, knn_acc_image=15.0, knn_acc_fusion=30.0, knn_acc_all=31.0)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"metrics": metrics, "provenance": {"scale": "smoke"}, "config": {}}))
    rng = np.random.default_rng(0)  # examples.npz as the separation / segmentation tasks write them
    runs = root / "results/runs/smoke"
    if (runs / "separation/deepavfusion").is_dir():
        np.savez(runs / "separation/deepavfusion/examples.npz", mix_audio=rng.random((2, 128, 192)),
                 source_audio=rng.random((2, 2, 128, 192)), pred_mask=rng.random((2, 2, 128, 192)))
    if (runs / "segmentation/deepavfusion").is_dir():
        np.savez(runs / "segmentation/deepavfusion/examples.npz", image=rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8),
                 mask=(rng.random((2, 64, 64)) > 0.5).astype(np.float32), pred=rng.random((2, 64, 64)))
    knn = root / "results/runs/smoke/pretrain/deepavfusion/knn.csv"
    knn.parent.mkdir(parents=True, exist_ok=True)
    knn.write_text("epoch,step,acc_audio,acc_image,acc_fusion,acc_all\n0,0,6.0,7.0,5.0,8.0\n"
                   "1,10,12.0,9.0,15.0,16.0\n2,20,20.0,15.0,30.0,31.0\n")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report_dag")
    smoke = yaml.safe_load((REPO / "workflow/config/scales/smoke.yaml").read_text())
    (root / "config.yaml").write_text(yaml.safe_dump({"scale": "smoke", "results": "results",
                                                      "task_datasets": smoke["task_datasets"]}))
    targets = [f"results/{t}.{ext}" for t in TABLES for ext in ("csv", "md")] + ["results/figure3.png", "results/claims.md"]
    (root / "Snakefile").write_text(f'configfile: "config.yaml"\ninclude: "{REPO}/workflow/rules/report.smk"\n\n'
                                    f"rule all:\n    input: {targets!r}\n    default_target: True\n")
    return root


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # jobs call `python`
    return subprocess.run([SNAKEMAKE, "--cores", "1", "--snakefile", "Snakefile", *args], cwd=root,
                          capture_output=True, text=True, timeout=240, env=env)


def test_table4_rule_needs_only_table4_runs(workdir):
    cfg = load_tables_config(REPO / "workflow/config/tables.yaml")
    ctx = smoke_context()
    table4 = required_runs(cfg, "table4", Path("results/runs/smoke"), ctx)
    write_fixture_runs(workdir, table4)
    done = snakemake(workdir, "results/table4.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = (workdir / "results/table4.csv").read_text().splitlines()
    # 6 variant rows + 5 floor rows (chance, mixture, NMF, all-foreground, all-background; issue 15)
    assert len(rows) == 1 + (6 + 5) * 3 and all(r.endswith((",ok", ",n/a")) for r in rows[1:])
    assert sum(r.endswith(",ok") for r in rows[1:]) == 6 * 3 + 5
    assert not (workdir / "results/table1.csv").exists()


def test_report_rules_build_every_output_and_the_html_report(workdir):
    cfg = load_tables_config(REPO / "workflow/config/tables.yaml")
    ctx = smoke_context()
    runs = {p for t in TABLES for p in required_runs(cfg, t, Path("results/runs/smoke"), ctx)}
    runs.update(f"results/runs/smoke/{task}/deepavfusion/metrics.json"
                for task in ("pretrain", "separation", "segmentation", "localization"))
    write_fixture_runs(workdir, sorted(runs))
    done = snakemake(workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    for t in TABLES:
        assert (workdir / f"results/{t}.csv").stat().st_size > 0 and (workdir / f"results/{t}.md").stat().st_size > 0
    for figure in FIGURES:
        assert (workdir / "results" / figure).read_bytes()[:4] == b"\x89PNG"
    # localization wrote no examples.npz here: its figure is a note, the others are drawn
    sizes = {f: (workdir / "results" / f).stat().st_size for f in FIGURES}
    assert sizes["figures/localization_examples.png"] < sizes["figures/separation_examples.png"]
    claims = (workdir / "results/claims.md").read_text()
    assert "## fig3_fusion_tokens_most_semantic" in claims
    # issue 15: ours is decided on 95 % intervals over seeds; the smoke scale runs one seed, so no interval
    assert ("| ours |  | fusion = 30, audio = 20, image = 15; fusion > audio: +10 [no interval] inconclusive, "
            "fusion > image: +15 [no interval] inconclusive | inconclusive") in claims
    assert (workdir / "results/figures/claims_effects.png").read_bytes()[:4] == b"\x89PNG"

    report = snakemake(workdir, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (workdir / "report.html").read_text()
    for output in [f"{t}.csv" for t in TABLES] + [Path(f).name for f in FIGURES] + ["claims.md"]:
        assert output in html, output
    assert html.count("data:image/png;base64") + html.count("image/png") >= len(FIGURES)
