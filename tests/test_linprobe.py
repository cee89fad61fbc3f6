"""Linear probe: classifier heads as the official AVClassifier, cached features = the definition, smoke runs."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from avfusion.config import ConfigError
from avfusion.models.classifier import AVClassifier, ClassifierHeads
from avfusion.models.registry import build_encoder
from avfusion.tasks import linprobe
from avfusion.tasks.common import load_job_config

# acc_all pretrained - random init on the tiny benchmark: half the smallest gap over seeds 0-2 (17.7, 14.3, 20.1;
# benchmarks/learning_margins.csv)
LINPROBE_MARGIN = 7.0


@pytest.fixture(scope="module")
def smoke_manifest(tuxav_smoke):
    return tuxav_smoke


def _config(manifest, *overrides):
    base = [f"data.manifest={manifest}", "data.image_size=64", "data.eval_split=val+test", "device=cpu",
            "model.preset=deepavfusion-smoke", "recipe=paper", "optim.lr=0.01", "optim.epochs=3",
            "optim.batch_size=12"]
    return load_job_config(linprobe.Config, [], base + list(overrides), linprobe.RECIPES)


def test_heads_are_bn_without_affine_then_xavier_linear_with_zero_bias():
    heads = ClassifierHeads(16, 5, ["audio", "fusion"], input_norm=True)
    assert heads.heads == ("audio", "fusion") and not hasattr(heads, "image_head")
    bn = heads.audio_norm
    assert bn.affine is False and bn.eps == 1e-6
    assert torch.count_nonzero(heads.fusion_head.bias) == 0
    bound = (6 / (16 + 5)) ** 0.5
    assert heads.audio_head.weight.abs().max() <= bound
    out = heads({"audio": torch.randn(4, 16), "fusion": torch.randn(4, 16)})
    torch.testing.assert_close(out["all"], (out["audio"] + out["fusion"]) / 2)


def test_frozen_encoder_stays_in_eval_mode_and_gets_no_gradients():
    model = AVClassifier(build_encoder({"preset": "deepavfusion-smoke"}), 3, freeze_encoder=True, input_norm=True)
    model.train()
    assert not model.encoder.training and model.image_norm.training
    logits = model(torch.randn(2, 3, 64, 64), torch.randn(2, 1, 128, 192))["all"]
    logits.sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.image_head.weight.grad is not None


def test_bad_heads_key_is_a_config_error():
    with pytest.raises(ConfigError, match="heads"):
        load_job_config(linprobe.Config, [], ["model.preset=deepavfusion-smoke", "heads=[image, video]"],
                        linprobe.RECIPES)


def test_probe_on_cached_features_equals_the_probe_on_the_frozen_encoder(smoke_manifest, tmp_path):
    """Heads trained on cached features, put on top of the frozen encoder, give the same eval logits."""
    torch.set_num_threads(1)
    cfg = _config(smoke_manifest, "heads=[audio, fusion]")
    metrics = linprobe.run(cfg, tmp_path)
    assert set(metrics) >= {"acc_all", "acc_audio", "acc_fusion"} and "acc_image" not in metrics
    assert metrics["n_train"] == 36 and metrics["n_eval"] == 12
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["acc_all"] == metrics["acc_all"]

    ckpt = torch.load(tmp_path / "checkpoints" / "checkpoint_latest.pth", weights_only=False)["state_dict"]
    torch.manual_seed(cfg.seed)   # the job's encoder: same seed, same random init
    full = AVClassifier(build_encoder(dict(cfg.model)), 6, cfg.heads, freeze_encoder=True, input_norm=True)
    full.load_state_dict(ckpt, strict=False)   # heads + BN statistics; the encoder is the job's own init
    full.eval()
    eval_set = linprobe.clip_dataset(cfg.data, cfg.data.eval_split, train=False)
    logits, labels = linprobe.predict(lambda b: full(b["image"], b["audio"]), DataLoader(eval_set, batch_size=12),
                                      torch.device("cpu"))
    acc = (logits["all"].argmax(1) == labels).float().mean().item() * 100
    assert acc == pytest.approx(metrics["acc_all"], abs=1e-4)


def test_probe_without_feature_cache_trains_heads_on_augmented_clips(smoke_manifest, tmp_path):
    torch.set_num_threads(1)
    metrics = linprobe.run(_config(smoke_manifest, "feature_cache=false", "optim.epochs=1"), tmp_path)
    assert set(metrics) >= {"acc_all", "acc_image", "acc_audio", "acc_fusion"}
    assert (tmp_path / "log.csv").read_text().count("\n") == 1 + 3        # 36 clips / 12 = 3 steps


@pytest.mark.slow   # ~1 CPU-min, plus the session's tiny pretraining (~2.5 CPU-min, shared with test_dense_tasks_tiny)
@pytest.mark.learning
def test_probe_on_pretrained_encoder_beats_random_init_on_the_tiny_benchmark(tuxav_tiny, pretrained_tiny,
                                                                            learning_seed, margin_check, tmp_path):
    """Pretraining helps the probe once there is enough data: smoke-size model, tiny benchmark (1536 train
    clips), 768 AV-MAE steps of 32 clips (conftest's `pretrained_tiny`), probe evaluated on val+test (384
    clips). With the smoke benchmark (36 train clips, <= 180 steps) or 192 clips x 120 steps the probe on the
    random encoder was as good or better (noise of 12-48 eval clips, random log-mel features are a strong
    audio probe), so this comparison runs on the tiny benchmark. Margin: LINPROBE_MARGIN (module top)."""
    torch.set_num_threads(1)
    common = [f"data.manifest={tuxav_tiny}", "data.image_size=64", "device=cpu", f"seed={learning_seed}",
              "model.preset=deepavfusion-smoke"]
    acc = {}
    for name, ckpt in [("pretrained", str(pretrained_tiny)), ("random", "")]:
        cfg = load_job_config(linprobe.Config, [], common + [
            "data.eval_split=val+test", "recipe=paper", "optim.lr=0.01", "optim.epochs=20", "optim.batch_size=64",
            f"init.checkpoint={ckpt}"], linprobe.RECIPES)
        acc[name] = linprobe.run(cfg, tmp_path / f"linprobe_{name}")["acc_all"]
    print(f"linear probe acc_all: pretrained {acc['pretrained']:.2f} vs random init {acc['random']:.2f}")
    margin_check("acc_all pretrained - random init", acc["pretrained"], acc["random"], LINPROBE_MARGIN)
