"""Baselines through the project's own jobs on the smoke tuxav benchmark (real Tux Paint media):
CAV-MAE and the unimodal MAEs via `avfusion pretrain`, their encoders via `linprobe` and
`separation`, Sound of Pixels via `separation --set method=sound_of_pixels`, NMF via `classical-separation`."""
from __future__ import annotations

import json

import pytest
import torch

from avfusion.cli import main as cli_main
from avfusion.models.registry import model_config


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py

FAST = ["--set", "scale=smoke", "--set", "data.image_size=64", "--set", "optim.epochs=1",
        "--set", "optim.batch_size=8", "--set", "optim.max_steps_per_epoch=2"]


@pytest.fixture(scope="module")
def tuxav(tuxav_smoke):
    return tuxav_smoke


def _run(command, out, *args):
    assert cli_main([command, *FAST, *args, "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def cav_run(tuxav, tmp_path_factory):
    """CAV-MAE pretrained (2 steps) from two unimodal MAE runs, as the DAG does at tiny/smoke."""
    runs = tmp_path_factory.mktemp("runs")
    data = ["--set", f"data.manifest={tuxav}", "--set", "knn.enabled=false"]
    _run("pretrain", runs / "mae_image", "--set", "model.preset=mae-image-smoke", *data)
    _run("pretrain", runs / "mae_audio", "--set", "model.preset=mae-audio-smoke", *data)
    _run("pretrain", runs / "cav", "--set", "model.preset=cav-mae-smoke", *data,
         "--set", f"init.image={runs / 'mae_image'}", "--set", f"init.audio={runs / 'mae_audio'}")
    return runs


def test_cav_mae_pretrains_from_unimodal_runs(cav_run):
    cav = json.loads((cav_run / "cav/metrics.json").read_text())["metrics"]
    assert {"loss", "loss_image", "loss_audio", "loss_contrastive"} <= set(cav)
    assert cav["loss"] == pytest.approx(cav["loss_image"] + cav["loss_audio"] + 0.01 * cav["loss_contrastive"],
                                        rel=1e-5)
    # the unimodal runs initialised the branches: after 2 warm-up steps the CAV-MAE audio block is still
    # the audio MAE's (a random init would differ by far more)
    ckpt = torch.load(cav_run / "cav/checkpoints/checkpoint_latest.pth", map_location="cpu", weights_only=False)
    mae = torch.load(cav_run / "mae_audio/checkpoints/checkpoint_latest.pth", map_location="cpu", weights_only=False)
    key = "audio.blocks.0.mlp.fc1.weight"
    assert (ckpt["state_dict"][f"encoder.{key}"] - mae["state_dict"][f"encoder.{key}"]).abs().max() < 0.01
    print("cav-mae smoke pretrain:", {k: round(v, 3) for k, v in cav.items() if isinstance(v, float)})


def test_cav_mae_features_go_through_the_linear_probe(tuxav, cav_run, tmp_path):
    lp = _run("linprobe", tmp_path / "lp", "--set", f"data.manifest={tuxav}", "--set", "model.preset=cav-mae-smoke",
              "--set", f"init.checkpoint={cav_run / 'cav'}", "--set", "optim.warmup_epochs=0")
    assert all(0.0 <= lp[k] <= 100.0 for k in ("acc_all", "acc_image", "acc_audio", "acc_fusion"))
    print("cav-mae smoke linprobe:", {k: lp[k] for k in ("acc_all", "acc_image", "acc_audio", "acc_fusion")})


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_unimodal_mae_features_go_through_the_linear_probe(tuxav, cav_run, tmp_path, modality):
    """Table 3 MAE / AudioMAE rows: the unimodal runs' encoders, one head."""
    lp = _run("linprobe", tmp_path / "lp", "--set", f"data.manifest={tuxav}", "--set", f"model.preset=mae-{modality}-smoke",
              "--set", f"init.checkpoint={cav_run / f'mae_{modality}'}", "--set", f"heads=[{modality}]",
              "--set", "optim.warmup_epochs=0")
    assert set(lp) >= {f"acc_{modality}", "acc_all"} and lp[f"acc_{modality}"] == lp["acc_all"]


def test_cav_mae_encoder_goes_through_the_separation_task(tuxav, cav_run, tmp_path):
    sep = _run("separation", tmp_path / "sep", "--set", f"data.manifest={tuxav}", "--set", "model.preset=cav-mae-smoke",
               "--set", f"init.checkpoint={cav_run / 'cav'}", "--set", "decoder_width=16",
               "--set", "optim.batch_size=2", "--set", "optim.max_steps_per_epoch=1")
    assert sep["n_pairs"] + sep["n_skipped"] == 6 and sep["n_pairs"] > 0
    assert all(isinstance(sep[k], float) for k in ("sdr", "sir", "sar", "sdr_mix"))
    print("cav-mae smoke separation:", {k: round(v, 3) if isinstance(v, float) else v for k, v in sep.items()})


def test_sound_of_pixels_trains_and_evaluates_in_the_separation_task(tuxav, tmp_path):
    sop = {k: v for k, v in model_config("sound-of-pixels-smoke").items() if k != "family"}
    sep = _run("separation", tmp_path / "sop", "--set", f"data.manifest={tuxav}", "--set", "method=sound_of_pixels",
               "--set", f"sop={json.dumps(sop)}", "--set", "optim.batch_size=2")
    assert sep["n_pairs"] + sep["n_skipped"] == 6 and sep["n_pairs"] > 0
    assert all(isinstance(sep[k], float) for k in ("sdr", "sir", "sar", "sdr_mix"))
    print("sound-of-pixels smoke separation:", {k: round(v, 3) if isinstance(v, float) else v for k, v in sep.items()})


def test_classical_separation_job_writes_metrics_over_manifest_pairs(tuxav, tmp_path):
    """`avfusion classical-separation` on the smoke tuxav benchmark's fixed test pairs."""
    import csv

    out = tmp_path / "run"
    assert cli_main(["classical-separation", "--set", "method=nmf", "--set", f"data.manifest={tuxav}",
                     "--set", "data.max_pairs=2", "--set", "nmf.n_components=8", "--set", "nmf.n_iter=50",
                     "--set", "scale=smoke", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"sdr", "sir", "sar", "sdr_mix", "n_pairs", "n_skipped"}
    assert metrics["n_pairs"] + metrics["n_skipped"] == 2
    with open(out / "log.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if not r["skipped"]]
    assert len(rows) == metrics["n_pairs"] > 0
    for key in ("sdr", "sir", "sar", "sdr_mix"):
        assert metrics[key] == pytest.approx(sum(float(r[key]) for r in rows) / len(rows))
    print("classical-separation nmf on 2 tuxav smoke pairs:", metrics)
