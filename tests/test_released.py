"""The `released` variants: downstream jobs start from a DeepAVFusion checkpoint file in the released
format (`{'state_dict': ...}` with the official key names, weights only, no optimizer), loaded strictly.

The file is written here at smoke size (the real ones are 1.3-1.5 GB ViT-B files; their key layout at
paper size is checked in tests/test_models_avmae.py): same key names as the paper-size model with the
block indices that exist at depth 2. A linear probe then runs from it through the Snakemake DAG
(`released_checkpoints.vggsound` in a config file, target .../linprobe/released_vggsound), with no
pretraining job."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from avfusion.models.checkpoint import load_encoder_from_checkpoint
from avfusion.models.registry import build_encoder, build_pretrain_model
from test_workflow import snakemake


def _normalised(keys) -> set[str]:
    return {re.sub(r"\.\d+\.", ".N.", k) for k in keys}


def write_released_checkpoint(root: Path, preset: str = "deepavfusion-smoke", seed: int = 3) -> tuple[Path, torch.nn.Module]:
    """deepavfusion_vitb_vggsound_ep200/checkpoints/checkpoint_latest.pth as released: state_dict only."""
    torch.manual_seed(seed)
    model = build_pretrain_model({"preset": preset}).eval()
    path = root / "deepavfusion_vitb_vggsound_ep200" / "checkpoints" / "checkpoint_latest.pth"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict()}, path)
    return path, model


def test_released_format_has_the_official_keys_and_loads_strictly_with_the_same_encoder_outputs(tmp_path):
    path, model = write_released_checkpoint(tmp_path)
    ckpt = torch.load(path, map_location="cpu")
    assert list(ckpt) == ["state_dict"]                     # weights only, as the released files
    keys = list(ckpt["state_dict"])
    with torch.device("meta"):
        paper = build_pretrain_model({"preset": "deepavfusion-vggsound"})
    assert _normalised(keys) == _normalised(paper.state_dict())   # the official names (893 keys at paper size)
    assert {"encoder.fusion_tokens", "image_decoder_pred.weight", "audio_decoder_mask_token"} <= set(keys)

    encoder = build_encoder({"preset": "deepavfusion-smoke"}).eval()
    loaded = load_encoder_from_checkpoint(encoder, str(path))   # strict: every encoder key, no other
    assert len(loaded) == len([k for k in keys if k.startswith("encoder.")])
    image = torch.randn(2, 3, *encoder.image.input_size)
    audio = torch.randn(2, 1, *encoder.audio.input_size)
    with torch.no_grad():
        want = model.encoder(image, audio)
        got = encoder(image, audio)
    for a, b in zip(want[:3], got[:3]):
        assert torch.equal(a, b)

    renamed = dict(ckpt["state_dict"])
    renamed["encoder.fusion_tokenz"] = renamed.pop("encoder.fusion_tokens")
    with pytest.raises(ValueError, match="fusion_tokens"):
        load_encoder_from_checkpoint(build_encoder({"preset": "deepavfusion-smoke"}), {"state_dict": renamed})


@pytest.mark.slow
def test_released_variant_runs_a_linear_probe_from_the_checkpoint_file(tmp_path):
    path, _ = write_released_checkpoint(tmp_path / "downloads")
    paths = tmp_path / "my_paths.yaml"
    paths.write_text(yaml.safe_dump({"released_checkpoints": {"vggsound": str(path)}}))
    run = tmp_path / "runs/smoke/linprobe/released_vggsound"
    out = snakemake("--cores", "2", "--configfile", str(paths), "--config", "scale=smoke", f"results={tmp_path}",
                    f"data_dir={tmp_path}/data", "--", f"{run}/metrics.json", timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert not (tmp_path / "runs/smoke/pretrain").exists()      # started from the file, nothing pretrained
    job = yaml.safe_load((run / "job_config.yaml").read_text())
    assert job["init"] == {"checkpoint": str(path)} and job["model"] == {"preset": "deepavfusion-smoke"}
    assert f"init.checkpoint: loaded encoder.* from {path}" in (run / "launch.log").read_text()
    metrics = yaml.safe_load((run / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["acc_all"] <= 100.0

    # `released` plans every Table 1-3 / 7 task of the given checkpoint; without one it names the key
    plan = snakemake("-n", "--configfile", str(paths), "--config", "scale=smoke", f"results={tmp_path}",
                     f"data_dir={tmp_path}/data", "--", "released")
    assert plan.returncode == 0, plan.stderr[-3000:]
    for task in ("finetune", "separation", "segmentation", "localization"):
        assert f"runs/smoke/{task}/released_vggsound/metrics.json" in plan.stdout
    assert "released_audioset" not in plan.stdout
    missing = snakemake("-n", "--config", "scale=smoke", f"results={tmp_path}", "--", "released")
    assert missing.returncode != 0 and "config error at 'released_checkpoints'" in missing.stdout + missing.stderr


def test_tables_show_released_rows_without_requiring_their_runs(tmp_path):
    """Tables 1, 2, 3 and 7 have a row per released checkpoint; the table rules do not need those runs
    ("not run" until `released` made them); a released run that exists fills its cells."""
    import json

    from avfusion.report.published import PUBLISHED_YAML, load_published
    from avfusion.report.tables import build_table, load_tables_config, required_runs
    from test_report_snakemake import REPO, smoke_context

    cfg = load_tables_config(REPO / "workflow/config/tables.yaml")
    ctx = smoke_context()
    runs = tmp_path / "runs/smoke"
    for table_id in ("table1", "table2", "table3", "table7"):
        variants = [r["variant"] for r in cfg["tables"][table_id]["rows"]]
        assert {"released_vggsound", "released_audioset"} <= set(variants), table_id
        assert not [p for p in required_runs(cfg, table_id, runs, ctx) if "/released_" in p.replace(str(runs), "")]
    run = runs / "linprobe/released_vggsound/metrics.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({"metrics": {"acc_all": 41.5}, "provenance": {}, "config": {}}))
    cells = build_table(cfg, "table3", runs, ctx, load_published(PUBLISHED_YAML))
    mine = {c["column_id"]: c for c in cells if c["variant"] == "released_vggsound"}
    assert mine["all_lp"]["ours"] == 41.5 and mine["all_lp"]["status"] == "ok"
    assert mine["all_ft"]["status"] == "not run (give released_checkpoints; target `released`)"
    assert all(c["status"].startswith("not run") for c in cells if c["variant"] == "released_audioset")
