"""Fine-tuning: mixup, label smoothing, the official joint loss, layer decay on the real encoder, a smoke run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avfusion.mixup import AVMixup, smooth_targets
from avfusion.models.classifier import AVClassifier
from avfusion.models.registry import build_encoder
from avfusion.optim import OptimConfig, param_groups
from avfusion.tasks import finetune
from avfusion.tasks.common import load_job_config


def test_smoothed_targets_put_on_and_off_values():
    y = smooth_targets(torch.tensor([2, 0]), 4, 0.1)
    assert torch.allclose(y[0], torch.tensor([0.025, 0.025, 0.925, 0.025]))
    multi = smooth_targets(torch.tensor([[1.0, 0.0, 1.0, 0.0]]), 4, 0.1)
    assert torch.allclose(multi, torch.tensor([[0.925, 0.025, 0.925, 0.025]]))


def test_mixup_mixes_each_sample_with_the_flipped_batch_per_element_lambda():
    image = torch.arange(3 * 48, dtype=torch.float32).reshape(3, 3, 4, 4)
    audio = torch.randn(3, 1, 8, 6)
    mix = AVMixup(alpha=1.0, prob=1.0, label_smoothing=0.0, num_classes=3)
    np.random.seed(5)
    lam = torch.from_numpy(mix.lambdas(3))
    np.random.seed(5)
    mixed_image, mixed_audio, target = mix(image, audio, torch.tensor([0, 1, 2]))
    assert len(set(lam.tolist())) == 3 and ((lam > 0) & (lam < 1)).all()
    for i, j in enumerate([2, 1, 0]):
        torch.testing.assert_close(mixed_image[i], lam[i] * image[i] + (1 - lam[i]) * image[j])
        torch.testing.assert_close(mixed_audio[i], lam[i] * audio[i] + (1 - lam[i]) * audio[j])
    torch.testing.assert_close(target[0], torch.tensor([lam[0], 0.0, 1 - lam[0]]))
    torch.testing.assert_close(target.sum(1), torch.ones(3))


def test_joint_loss_single_label_is_ce_scaled_by_mean_inverse_frequency():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.1, 1.0, 0.2, 9.0]])
    target = smooth_targets(torch.tensor([0, 1]), 4, 0.0)
    freq = torch.tensor([0.5, 0.25, 0.25, 0.0])        # class 3 unseen in training: left out
    ce = torch.nn.functional.cross_entropy(logits[:, :3], torch.tensor([0, 1]))
    got = finetune.finetune_loss(logits, target, freq, multilabel=False, class_weighted=True)
    assert got.item() == pytest.approx(ce.item() * (2 + 4 + 4) / 3, rel=1e-6)
    assert finetune.finetune_loss(logits, target, freq, False, False).item() == pytest.approx(ce.item(), rel=1e-6)


def test_joint_loss_multilabel_weights_each_class_by_inverse_frequency():
    logits = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    freq = torch.tensor([0.5, 0.1])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    got = finetune.finetune_loss(logits, target, freq, multilabel=True, class_weighted=True)
    assert got.item() == pytest.approx((bce / freq).mean().item(), rel=1e-6)


def test_layer_decay_groups_on_the_real_classifier():
    encoder = build_encoder({"preset": "deepavfusion-smoke"})      # depth 2
    model = AVClassifier(encoder, num_classes=5)
    groups = param_groups(model, OptimConfig(layer_decay=0.75))
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    assert scale["encoder.image.patch_embed.proj.weight"] == pytest.approx(0.75 ** 3)
    assert scale["encoder.fusion_tokens"] == pytest.approx(0.75 ** 3)
    assert scale["encoder.audio.blocks.0.attn.qkv.weight"] == pytest.approx(0.75 ** 2)
    assert scale["encoder.fusion_blocks.1.norm2.weight"] == pytest.approx(0.75)
    assert scale["encoder.fusion_norm.weight"] == 1.0 and scale["fusion_head.weight"] == 1.0
    assert "encoder.image.pos_embed" not in scale                  # frozen sin-cos table


def test_head_bias_init_from_class_frequencies():
    model = AVClassifier(build_encoder({"preset": "deepavfusion-smoke"}), num_classes=3)
    model.init_head_bias(torch.tensor([0.5, 0.25, 0.0]))
    expected = [math.log((f + 1e-3) / (1 - f + 1e-3)) for f in (0.5, 0.25, 0.0)]
    for head in ("image_head", "audio_head", "fusion_head"):
        assert getattr(model, head).bias.tolist() == pytest.approx(expected)


@pytest.fixture(scope="module")
def smoke_manifest(tuxav_smoke):
    return tuxav_smoke


def test_smoke_finetune_writes_metrics_and_evaluates_deterministically(smoke_manifest, tmp_path):
    torch.set_num_threads(1)
    cfg = load_job_config(finetune.Config, [], [
        f"data.manifest={smoke_manifest}", "data.image_size=64", "data.eval_split=val+test", "device=cpu",
        "model.preset=deepavfusion-smoke", "optim.epochs=2", "optim.warmup_epochs=1", "optim.batch_size=6",
        "eval_every=1"], finetune.RECIPES)
    assert cfg.optim.layer_decay == 0.75 and cfg.mixup == 1.0 and cfg.drop_path == 0.2   # code recipe
    metrics = finetune.run(cfg, tmp_path)
    assert set(metrics) >= {"acc_all", "acc_image", "acc_audio", "acc_fusion"}
    assert metrics["n_eval"] == 12 and all(0 <= metrics[k] <= 100 for k in ("acc_all", "acc_audio"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["config"]["model"]["preset"] == "deepavfusion-smoke"
    eval_rows = (tmp_path / "eval.csv").read_text().splitlines()
    assert eval_rows[0].startswith("epoch,step,acc_all") and len(eval_rows) == 3
    # the last per-epoch evaluation and the final one use the same weights and data: identical numbers
    assert float(eval_rows[-1].split(",")[2]) == pytest.approx(metrics["acc_all"], abs=1e-3)
    # dense evaluation (official n=10, span 10 s) on 3 s clips: the 10 windows coincide with the single
    # clip, so each video is decoded and forwarded once and the dense metrics equal the single-clip ones
    assert (metrics["dense_n_clips"], metrics["dense_span_s"], metrics["dense_n_eval"]) == (10, 10.0, 12)
    assert metrics["dense_windows_forwarded"] == 12 and metrics["dense_n_short_span"] == 12
    assert metrics["dense_n_short_clip"] == 0
    for head in ("all", "image", "audio", "fusion"):
        assert metrics[f"dense_acc_{head}"] == pytest.approx(metrics[f"acc_{head}"], abs=1e-6)
        assert saved["metrics"][f"dense_acc_{head}"] == metrics[f"dense_acc_{head}"]


def test_cli_smoke_scale_finetune_writes_dense_metrics(smoke_manifest, tmp_path, repo_root):
    """`avfusion finetune` with the smoke scale's finetune section, as the workflow runs it."""
    import yaml

    from avfusion.cli import main

    torch.set_num_threads(1)
    scale = yaml.safe_load((repo_root / "workflow/config/scales/smoke.yaml").read_text())
    section = dict(scale["tasks"]["finetune"], model={"preset": "deepavfusion-smoke"}, device="cpu")
    config = tmp_path / "finetune.yaml"
    config.write_text(yaml.safe_dump(section))
    out = tmp_path / "run"
    assert main(["finetune", "--config", str(config), "--set", f"data.manifest={smoke_manifest}",
                 "--set", "dense_eval.n_clips=4", "--out", str(out)]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    metrics = saved["metrics"]
    assert saved["config"]["dense_eval"] == {"enabled": True, "n_clips": 4, "span_s": 10.0, "gain_db": 0.0,
                                             "batch_size": 0}
    assert metrics["dense_n_eval"] == metrics["n_eval"] == 6 and metrics["dense_windows_forwarded"] == 6
    assert {f"dense_acc_{h}" for h in ("all", "image", "audio", "fusion")} <= set(metrics)
    assert metrics["dense_acc_all"] == pytest.approx(metrics["acc_all"], abs=1e-6)


@pytest.mark.parametrize("key, value", [("n_clips", "0"), ("span_s", "2.5"), ("gain_db", "-1")])
def test_dense_eval_config_is_validated(key, value):
    from avfusion.config import ConfigError

    with pytest.raises(ConfigError, match=f"dense_eval.{key}"):
        load_job_config(finetune.Config, [], ["model.preset=deepavfusion-smoke", f"dense_eval.{key}={value}"],
                        finetune.RECIPES)


def test_paper_recipe_is_plain_adam_without_extras():
    cfg = load_job_config(finetune.Config, [], ["model.preset=deepavfusion-smoke", "recipe=paper"], finetune.RECIPES)
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.batch_size, cfg.optim.epochs) == ("adam", 1e-4, 128, 50)
    assert cfg.optim.layer_decay is None and cfg.mixup == 0.0 and cfg.label_smoothing == 0.0
