"""Parameter groups, layer decay, lr schedule, LARS and config validation of the engine."""
from __future__ import annotations

import math

import pytest
import torch

from avfusion.config import ConfigError, from_dict
from avfusion.engine import OptimConfig, train
from avfusion.optim import LARS, layer_id, lr_at, param_groups, ramp_at, set_lr, build_optimizer


class TinyEncoder(torch.nn.Module):
    """Names as in the official encoder (spec 2.5)."""

    def __init__(self, depth=2, dim=4):
        super().__init__()
        self.depth = depth
        self.fusion_tokens = torch.nn.Parameter(torch.zeros(1, 3, dim))
        for branch in ("image", "audio"):
            vit = torch.nn.Module()
            vit.patch_embed = torch.nn.Module()
            vit.patch_embed.proj = torch.nn.Conv2d(1, dim, 2)
            vit.pos_embed = torch.nn.Parameter(torch.zeros(1, 4, dim), requires_grad=False)
            vit.blocks = torch.nn.ModuleList([torch.nn.Linear(dim, dim) for _ in range(depth)])
            vit.norm = torch.nn.LayerNorm(dim)
            setattr(self, branch, vit)
        self.fusion_blocks = torch.nn.ModuleList([torch.nn.Linear(dim, dim) for _ in range(depth)])
        self.fusion_norm = torch.nn.LayerNorm(dim)


class TinyClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = TinyEncoder()
        self.image_head = torch.nn.Linear(4, 3)


def _group_of(groups, name):
    return next(g for g in groups if name in g["param_names"])


def test_layer_ids_follow_the_official_assignment():
    assert layer_id("image.patch_embed.proj.weight", 12) == 0
    assert layer_id("fusion_tokens", 12) == 0
    assert layer_id("audio.blocks.3.attn.qkv.weight", 12) == 4
    assert layer_id("fusion_blocks.11.mlp.fc1.weight", 12) == 12
    assert layer_id("image.norm.weight", 12) == 13
    assert layer_id("fusion_norm.bias", 12) == 13


def test_param_groups_decay_and_layer_scales():
    model = TinyClassifier()
    cfg = OptimConfig(layer_decay=0.75, weight_decay=0.05)
    groups = param_groups(model, cfg)
    names = [n for g in groups for n in g["param_names"]]
    assert "encoder.image.pos_embed" not in names  # frozen
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    g = _group_of(groups, "encoder.image.patch_embed.proj.weight")
    assert g["weight_decay"] == 0.05 and g["lr_scale"] == pytest.approx(0.75 ** 3)
    g = _group_of(groups, "encoder.image.patch_embed.proj.bias")
    assert g["weight_decay"] == 0.0
    assert _group_of(groups, "encoder.fusion_tokens")["weight_decay"] == 0.05  # decayed (spec 3.2)
    assert _group_of(groups, "encoder.fusion_blocks.1.weight")["lr_scale"] == pytest.approx(0.75)
    assert _group_of(groups, "encoder.audio.norm.weight")["weight_decay"] == 0.0
    assert _group_of(groups, "image_head.weight")["lr_scale"] == 1.0


def test_unimodal_ramp_groups_and_values():
    model = TinyClassifier()
    cfg = OptimConfig(unimodal_lr_ramp=True, epochs=10, warmup_epochs=2)
    groups = param_groups(model, cfg, ramp_prefixes=("encoder.image.", "encoder.audio."))
    assert _group_of(groups, "encoder.image.blocks.0.weight")["ramp"]
    assert not _group_of(groups, "encoder.fusion_blocks.0.weight")["ramp"]
    assert ramp_at(cfg, 0.0) == 0.0 and ramp_at(cfg, 2.5) == pytest.approx(0.5) and ramp_at(cfg, 7.0) == 1.0
    opt = build_optimizer(groups, cfg, 1.0)
    lr = set_lr(opt, cfg, 1.0, 2.5)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(lr * (0.5 if g["ramp"] else 1.0))


def test_warmup_then_half_cosine_matches_mae_formula():
    cfg = OptimConfig(epochs=10, warmup_epochs=2, blr=1.5e-4, batch_size=64, accum_iter=2)
    base = cfg.absolute_lr(world_size=4)
    assert base == pytest.approx(1.5e-4 * 512 / 256)
    assert lr_at(cfg, base, 1.0) == pytest.approx(base / 2)
    assert lr_at(cfg, base, 2.0) == pytest.approx(base)
    assert lr_at(cfg, base, 6.0) == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(cfg, base, 10.0) == pytest.approx(0.0, abs=1e-12)
    assert OptimConfig(lr=0.3).absolute_lr(8) == 0.3


def test_lars_scales_matrix_updates_by_trust_ratio_and_skips_vectors():
    w = torch.nn.Parameter(torch.full((2, 2), 2.0))
    b = torch.nn.Parameter(torch.ones(2))
    w.grad, b.grad = torch.ones(2, 2), torch.ones(2)
    LARS([w, b], lr=1.0, momentum=0.9).step()
    # trust = 0.001 * |w| / |g| = 0.001 * 4 / 2
    torch.testing.assert_close(w.detach(), torch.full((2, 2), 2.0 - 0.002))
    torch.testing.assert_close(b.detach(), torch.zeros(2))


@pytest.mark.parametrize("key,value,needle", [
    ("optimizer", "rmsprop", "optim.optimizer"), ("epochs", "ten", "optim.epochs"),
    ("betas", [0.9], "optim.betas"), ("learning_rate", 0.1, "optim.learning_rate"),
    ("accum_iter", 0, "optim.accum_iter")])
def test_bad_optim_keys_fail_naming_the_key(key, value, needle):
    from dataclasses import dataclass, field

    @dataclass
    class Job:
        optim: OptimConfig = field(default_factory=OptimConfig)

    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        from_dict(Job, {"optim": {key: value}})


def test_too_small_dataset_is_a_clear_error(tmp_path):
    data = torch.utils.data.TensorDataset(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="no full optimizer step"):
        train(torch.nn.Linear(2, 1), lambda m, b: (m(b[0]).sum(), {}), data,
              OptimConfig(batch_size=4), tmp_path, device="cpu")


def test_nonfinite_loss_stops_naming_the_step(tmp_path):
    data = torch.utils.data.TensorDataset(torch.zeros(8, 2))
    with pytest.raises(FloatingPointError, match="epoch 0, iteration 0"):
        train(torch.nn.Linear(2, 1), lambda m, b: (m(b[0]).sum() * float("nan"), {}), data,
              OptimConfig(batch_size=4), tmp_path, device="cpu")


def test_finished_run_resumes_without_training_and_keeps_history(tmp_path):
    data = torch.utils.data.TensorDataset(torch.randn(8, 2))
    cfg = OptimConfig(batch_size=4, epochs=2, lr=0.1, optimizer="sgd")
    loss_fn = lambda m, b: (m(b[0]).pow(2).mean(), {})  # noqa: E731
    first = train(torch.nn.Linear(2, 1), loss_fn, data, cfg, tmp_path, device="cpu")
    assert first.steps == 4 and [r["epoch"] for r in first.history] == [0.0, 1.0]
    again = train(torch.nn.Linear(2, 1), loss_fn, data, cfg, tmp_path, device="cpu")
    assert again.resumed_from == 2 and again.steps == 4 and len(again.history) == 2
    torch.testing.assert_close(again.model.weight, first.model.weight)


def test_time_budget_stops_after_the_epoch_that_crosses_it(tmp_path):
    data = torch.utils.data.TensorDataset(torch.randn(8, 2))
    cfg = OptimConfig(batch_size=4, epochs=5, lr=0.1, optimizer="sgd", time_budget_s=0.0)
    result = train(torch.nn.Linear(2, 1), lambda m, b: (m(b[0]).pow(2).mean(), {}), data, cfg, tmp_path, device="cpu")
    assert result.stopped_early and result.epochs_done == 1 and result.steps == 2
