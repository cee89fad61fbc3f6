"""AV-MAE pretraining job on the smoke benchmark, the kNN probe, unimodal init, and config errors."""
from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from avfusion.config import ConfigError
from avfusion.tasks import pretrain
from avfusion.tasks.common import load_job_config
from avfusion.tasks.knn_probe import knn_loo

LOSS_DROP_MARGIN = 0.2   # first - last epoch's smoke loss; smallest over seeds 0-4: 0.511 (benchmarks/learning_margins.csv)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def smoke_manifest(tuxav_smoke):
    return tuxav_smoke


def _config(manifest, *overrides):
    base = [f"data.manifest={manifest}", "data.image_size=64", "device=cpu", "scale=smoke",
            "model.preset=deepavfusion-smoke", "optim.batch_size=6", "optim.lr=0.002", "optim.warmup_epochs=1",
            "knn.split=train", "knn.batch_size=12"]
    return load_job_config(pretrain.Config, [], base + list(overrides), pretrain.RECIPES)


def test_knn_loo_matches_brute_force_leave_one_out():
    g = torch.Generator().manual_seed(0)
    feats = {m: torch.nn.functional.normalize(torch.randn(40, 5, generator=g), dim=1) for m in ("audio", "image", "fusion")}
    labels = torch.randint(0, 4, (40,), generator=g)
    got = knn_loo(feats, labels, chunk=7)
    for name, sim in [*((m, feats[m] @ feats[m].T) for m in feats),
                      ("all", sum(feats[m] @ feats[m].T for m in feats))]:
        sim = sim.numpy().copy()
        np.fill_diagonal(sim, -np.inf)
        expected = 100 * np.mean(labels.numpy()[sim.argmax(1)] == labels.numpy())
        assert got[f"acc_{name}"] == pytest.approx(expected)


def test_knn_loo_multilabel_scores_neighbour_labels_by_similarity():
    g = torch.Generator().manual_seed(1)
    feats = {"audio": torch.nn.functional.normalize(torch.randn(30, 4, generator=g), dim=1)}
    labels = (torch.rand(30, 3, generator=g) < 0.4).float()
    labels[0] = torch.tensor([1.0, 1.0, 1.0])
    got = knn_loo(feats, labels)
    sim = (feats["audio"] @ feats["audio"].T).numpy()
    np.fill_diagonal(sim, -np.inf)
    nn_idx = sim.argmax(1)
    scores = labels.numpy()[nn_idx] * sim[np.arange(30), nn_idx][:, None]
    assert got["map_audio"] == pytest.approx(100 * skm.average_precision_score(labels.numpy(), scores, average="macro"))
    assert got["auc_audio"] == pytest.approx(100 * skm.roc_auc_score(labels.numpy(), scores, average="macro"))
    assert "map_image" not in got and "map_all" in got


@pytest.mark.learning
def test_smoke_pretraining_loss_falls_and_knn_curve_is_written(smoke_manifest, learning_seed, margin_check, tmp_path):
    torch.set_num_threads(1)
    cfg = _config(smoke_manifest, f"seed={learning_seed}", "optim.epochs=4", "knn.every=2", "knn.at_start=true")
    metrics = pretrain.run(cfg, tmp_path)
    steps = _rows(tmp_path / "log.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, 25))   # 36 clips / 6 = 6 steps x 4 epochs
    first, last = np.mean([float(r["loss"]) for r in steps[:6]]), np.mean([float(r["loss"]) for r in steps[-6:]])
    print(f"smoke pretraining loss: first epoch {first:.3f} -> last epoch {last:.3f}")
    margin_check("first-epoch loss - last-epoch loss", first, last, LOSS_DROP_MARGIN)
    knn = _rows(tmp_path / "knn.csv")
    assert list(knn[0]) == ["epoch", "step", "acc_audio", "acc_image", "acc_fusion", "acc_all"]
    assert [(r["epoch"], r["step"]) for r in knn] == [("-1", "0"), ("0", "6"), ("2", "18"), ("3", "24")]
    assert all(0.0 <= float(r[c]) <= 100.0 for r in knn for c in list(r)[2:])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"] == metrics
    assert metrics["loss"] == pytest.approx(float(_rows(tmp_path / "epochs.csv")[-1]["loss"]))
    assert metrics["knn_acc_fusion"] == pytest.approx(float(knn[-1]["acc_fusion"]), abs=1e-4)
    assert {"loss_image", "loss_audio", "knn_acc_audio", "knn_acc_image", "knn_acc_all"} <= set(metrics)
    assert saved["provenance"]["scale"] == "smoke" and saved["provenance"]["manifest_hash"]
    ckpt = torch.load(tmp_path / "checkpoints" / "checkpoint_latest.pth", weights_only=False)
    assert any(k.startswith("encoder.fusion_blocks.") for k in ckpt["state_dict"])
    assert any(k.startswith("image_decoder_") for k in ckpt["state_dict"])

    # the standalone knn-probe job on the final checkpoint reproduces the last row of knn.csv
    from avfusion.tasks import knn_probe

    probe_cfg = load_job_config(knn_probe.Config, [], [
        f"init.checkpoint={tmp_path}", "model.preset=deepavfusion-smoke", f"data.manifest={smoke_manifest}",
        "data.split=train", "data.image_size=64", "data.batch_size=12", "device=cpu"])
    probe = knn_probe.run(probe_cfg, tmp_path / "probe")
    for col in ("acc_audio", "acc_image", "acc_fusion", "acc_all"):
        assert probe[f"knn_{col}"] == pytest.approx(float(knn[-1][col]), abs=1e-4)


def test_unimodal_mae_run_initialises_the_audio_visual_branch(smoke_manifest, tmp_path):
    torch.set_num_threads(1)
    image_run = tmp_path / "mae_image"
    cfg = _config(smoke_manifest, "model.preset=mae-image-smoke", "optim.epochs=1", "knn.every=1")
    metrics = pretrain.run(cfg, image_run)
    assert "knn_acc_image" in metrics and "knn_acc_audio" not in metrics and "loss_image" in metrics
    assert _rows(image_run / "knn.csv")[-1]["acc_audio"] == ""
    mae = torch.load(image_run / "checkpoints" / "checkpoint_latest.pth", weights_only=False)["state_dict"]

    from avfusion.models.registry import build_pretrain_model
    model = build_pretrain_model({"preset": "deepavfusion-smoke"})
    pretrain.load_unimodal_init(model, pretrain.InitConfig(image=str(image_run)))
    for key, value in model.encoder.image.state_dict().items():
        if key != "pos_embed":
            torch.testing.assert_close(value, mae[f"encoder.image.{key}"])


@pytest.mark.parametrize("override,key", [
    ("optim.lr=fast", "optim.lr"), ("optim.epoch=3", "optim.epoch"), ("knn.every=often", "knn.every"),
    ("recipe=mine", "recipe"), ("model.fusion.arch=sparse", "model.fusion.arch"),
    ("model.depthh=3", "model.depthh"), ("model.preset=nonesuch", "model.preset")])
def test_bad_config_fails_before_training_naming_the_key(smoke_manifest, tmp_path, override, key):
    args = argparse.Namespace(config=[], overrides=[f"data.manifest={smoke_manifest}", "device=cpu",
                                                           "model.preset=deepavfusion-smoke", override],
                              out=tmp_path / "run")
    with pytest.raises((SystemExit, ConfigError), match=key.replace(".", r"\.")):
        pretrain.main(args)
    assert not (tmp_path / "run" / "log.csv").exists()


def test_import_only_makes_a_run_folder_of_published_weights(smoke_manifest, tmp_path):
    """Paper scale's Table 3 MAE / AudioMAE rows: the public weight file (MAE format: `model`, no prefix)
    imported as a pretraining run folder that the downstream tasks load like any other."""
    from avfusion.models.registry import build_encoder, build_pretrain_model

    torch.manual_seed(7)
    public = build_pretrain_model({"preset": "mae-image-smoke"}).encoder.image.state_dict()
    weights = tmp_path / "mae_pretrain_vit_smoke.pth"
    torch.save({"model": public}, weights)
    cfg = _config(smoke_manifest, "model.preset=mae-image-smoke", f"init.image={weights}", "import_only=true")
    assert pretrain.run(cfg, tmp_path / "mae_image") == {"imported": 1, "epochs": 0, "steps": 0}
    saved = json.loads((tmp_path / "mae_image" / "metrics.json").read_text())
    assert saved["provenance"]["imported_from"]["image"] == str(weights)
    encoder = build_encoder({"preset": "mae-image-smoke"}, str(tmp_path / "mae_image"), 64, False)
    for key, value in public.items():
        torch.testing.assert_close(encoder.image.state_dict()[key], value)
    with pytest.raises(ConfigError, match="import_only"):
        _config(smoke_manifest, "model.preset=mae-image-smoke", "import_only=true")


def test_unimodal_lr_ramp_applies_to_initialised_branches_only(smoke_manifest):
    assert pretrain.ramp_prefixes(_config(smoke_manifest)) == ()   # random branches: no ramp
    assert pretrain.ramp_prefixes(_config(smoke_manifest, "init.image=x.pth")) == ("encoder.image.",)
    assert pretrain.ramp_prefixes(_config(smoke_manifest, "init.image=x.pth", "init.audio=y.pth")) == (
        "encoder.image.", "encoder.audio.")
    assert pretrain.ramp_prefixes(_config(smoke_manifest, "ramp_random_branches=true")) == (
        "encoder.image.", "encoder.audio.")  # the official quirk, as a switch


def test_uint8_training_images_give_the_same_run_bit_for_bit(smoke_manifest, tmp_path):
    """`data.train_image_dtype: uint8`: the items carry the uint8 crop, the engine normalises each batch after
    moving it to the device (issue 16: 1/4 of the image bytes through the DataLoader). The losses, the kNN
    probe (float32 eval items) and the weights are those of the default float32 run, bit for bit."""
    torch.set_num_threads(1)
    runs = {}
    for dtype in ("float32", "uint8"):
        cfg = _config(smoke_manifest, "optim.epochs=1", "optim.max_steps_per_epoch=3", f"data.train_image_dtype={dtype}")
        runs[dtype] = (pretrain.run(cfg, tmp_path / dtype), _rows(tmp_path / dtype / "log.csv"),
                       torch.load(tmp_path / dtype / "checkpoints" / "checkpoint_latest.pth", weights_only=False))
    (m32, log32, ck32), (m8, log8, ck8) = runs["float32"], runs["uint8"]
    assert len(log32) == 3 and [r["loss"] for r in log8] == [r["loss"] for r in log32]
    assert m8["knn_acc_all"] == m32["knn_acc_all"]
    for key, value in ck32["state_dict"].items():
        assert torch.equal(ck8["state_dict"][key], value), key
