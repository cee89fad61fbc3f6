"""CAV-MAE baseline: the contrastive loss by hand, the encoder contract, smoke training."""
from __future__ import annotations

import math

import pytest
import torch

from avfusion.models.registry import build_encoder, build_pretrain_model
from baselines.cavmae import CAVMAEEncoder, contrastive_loss

LOSS_DROP_MARGIN = 0.2   # first - last smoke loss; smallest over seeds 0-4: 0.420 (benchmarks/learning_margins.csv)


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


def _smoke_batch(batch=4):
    return torch.randn(batch, 3, 64, 64), torch.randn(batch, 1, 128, 192)


def _hand_infonce(audio, image, temperature, image_to_audio=True):
    """-mean_j log softmax over audios i of cos(a_i, v_j)/T at i=j (official: log_softmax dim 0)."""
    def cos(x, y):
        return sum(a * b for a, b in zip(x, y)) / math.sqrt(sum(a * a for a in x) * sum(b * b for b in y))
    n = len(audio)
    total = 0.0
    for j in range(n):
        if image_to_audio:
            logits = [cos(audio[i], image[j]) / temperature for i in range(n)]
        else:
            logits = [cos(audio[j], image[i]) / temperature for i in range(n)]
        total += -(logits[j] - math.log(sum(math.exp(v) for v in logits)))
    return total / n


def test_contrastive_loss_matches_a_hand_computation():
    audio = [[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-0.4, 0.1, 1.0]]
    image = [[0.9, 0.2, 0.4], [2.0, 0.0, 1.0], [0.0, -0.2, 0.8]]
    a, v = torch.tensor(audio, dtype=torch.float64), torch.tensor(image, dtype=torch.float64)
    nce, acc = contrastive_loss(a, v, temperature=0.05)
    assert nce.item() == pytest.approx(_hand_infonce(audio, image, 0.05), rel=1e-12)
    # image 1 is parallel to audio 0, so only columns 0 and 2 retrieve their own audio
    assert acc.item() == pytest.approx(2 / 3)
    sym, _ = contrastive_loss(a, v, temperature=0.05, bidirectional=True)
    expected = (_hand_infonce(audio, image, 0.05) + _hand_infonce(audio, image, 0.05, image_to_audio=False)) / 2
    assert sym.item() == pytest.approx(expected, rel=1e-12)


def test_total_loss_is_reconstruction_plus_weighted_contrastive():
    model = build_pretrain_model({"preset": "cav-mae-smoke"})
    assert model.contrastive_weight == 0.01 and model.temperature == 0.05 and not model.bidirectional
    out = model(*_smoke_batch(3))
    expected = out["loss_image"] + out["loss_audio"] + 0.01 * out["loss_contrastive"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_encoder_contract_shapes_and_layers():
    enc = CAVMAEEncoder(embed_dim=64, depth=3, joint_depth=1, num_heads=4, image_size=(32, 32))
    out = enc(torch.randn(2, 3, 32, 32), torch.randn(2, 1, 128, 192), return_embs=True)
    assert (enc.embed_dim, enc.depth, enc.image_grid, enc.audio_grid) == (64, 3, (2, 2), (8, 12))
    assert out.image.shape == (2, 4, 64) and out.audio.shape == (2, 96, 64)
    assert out.fusion.shape == (2, 96 + 4, 64)  # the joint stream over [audio ; image]
    assert len(out.layers) == 3
    assert [tuple(t.shape[1] for t in layer) for layer in out.layers] == [(4, 96, 0), (4, 96, 0), (4, 96, 100)]
    # the joint block in audio mode uses norm1_a/norm2_a: the audio output is that pass, then norm_a
    x_aud = out.layers[1][1]
    manual = enc.audio.norm(enc.joint_blocks[0](x_aud, "a"))
    torch.testing.assert_close(out.audio, manual)
    with pytest.raises(ValueError, match="audio"):
        enc(torch.randn(2, 3, 32, 32), torch.randn(2, 1, 128, 100))


@pytest.mark.learning
def test_smoke_training_lowers_the_loss(learning_seed, margin_check):
    model = build_pretrain_model({"preset": "cav-mae-smoke"})
    image, audio = _smoke_batch(4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        torch.manual_seed(1 + learning_seed)  # same masks every step: the loss must fall on this batch
        out = model(image, audio)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    print("cav-mae smoke losses", [round(x, 4) for x in losses])
    margin_check("first loss - last loss", losses[0], losses[-1], LOSS_DROP_MARGIN)


def test_unimodal_init_fills_branch_and_joint_block(tmp_path):
    """A depth-2 image MAE: block 0 -> image branch, block 1 -> shared joint attention/MLP + image/joint norms."""
    mae = build_pretrain_model({"preset": "mae-image-smoke"})
    for p in mae.parameters():
        p.data.normal_()
    torch.save({"state_dict": mae.state_dict()}, tmp_path / "mae.pth")
    enc = build_encoder({"preset": "cav-mae-smoke", "image": {"pretrained": str(tmp_path / "mae.pth")}})
    src = mae.encoder.image
    torch.testing.assert_close(enc.image.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    torch.testing.assert_close(enc.image.norm.weight, src.norm.weight)
    joint = enc.joint_blocks[0]
    torch.testing.assert_close(joint.mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    for norm in ("norm1", "norm1_v"):
        torch.testing.assert_close(getattr(joint, norm).weight, src.blocks[1].norm1.weight)
    assert not torch.equal(joint.norm1_a.weight, src.blocks[1].norm1.weight)  # audio norms untouched


def test_layer_decay_sees_the_joint_block_at_its_depth():
    """Fine-tuning's layer ids (spec 4): joint block = last layer, branches' blocks = their index + 1."""
    from avfusion.optim import OptimConfig, param_groups

    enc = build_encoder({"preset": "cav-mae-smoke"})  # depth 2: one branch block + the joint block
    groups = param_groups(enc, OptimConfig(layer_decay=0.75), depth=enc.depth)
    layer_of = {name: int(g["name"].split("_")[0][len("layer"):]) for g in groups for name in g["param_names"]}
    assert layer_of["fusion_blocks.1.attn.qkv.weight"] == 2
    assert layer_of["audio.blocks.0.mlp.fc1.weight"] == 1
    assert layer_of["image.patch_embed.proj.weight"] == 0
    assert layer_of["fusion_norm.weight"] == 3
